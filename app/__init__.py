"""The MultiMem Studio dashboard (Streamlit). Entry point: app/main.py; `multimem app RUN` starts it."""

from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"

# Server options every launcher uses (`multimem app`, the browser test): a viewer's toolbar (no Deploy
# button), no usage statistics, and a calm blue that does not read as "noisy" red.
STREAMLIT_OPTIONS = [
    "--server.headless", "true",
    "--browser.gatherUsageStats", "false",
    "--client.toolbarMode", "viewer",
    "--theme.primaryColor", "#2F6DB5",
]


def streamlit_command(run: str | Path, *, host: str = "127.0.0.1", port: int = 8501,
                      data_root: str | Path | None = None) -> list[str]:
    """The `streamlit run` command line that serves the dashboard for `run` (a run or a folder of runs);
    media are served only from under `data_root` (default: the folder the app starts in)."""
    import sys

    root = ["--data-root", str(Path(data_root).resolve())] if data_root is not None else []
    return [sys.executable, "-m", "streamlit", "run", str(MAIN), "--server.address", host,
            "--server.port", str(port), *STREAMLIT_OPTIONS, "--", "--run", str(run), *root]
