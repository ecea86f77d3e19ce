"""`import multimem as mm`: the notebook API (multimem_core.api). `mm.score(df)` scores a DataFrame, a
`datasets.Dataset` or a path; `mm.open(run)` starts the dashboard on it."""

from multimem_core.api import Run, open, options, score  # noqa: A004, F401 (the public names)

__all__ = ["Run", "open", "options", "score"]
