"""The code's shape as docs/ARCHITECTURE.md and the team's rules describe it."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for folder in ("multimem_core", "app") for p in (ROOT / folder).rglob("*.py"))


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def test_every_module_appears_in_the_architecture():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [rel(p) for p in MODULES if f"`{rel(p)}`" not in doc]
    assert not missing, f"not in docs/ARCHITECTURE.md: {missing}"
    listed = set(re.findall(r"`((?:multimem_core|app)/[\w/]+\.py)`", doc))
    assert not listed - {rel(p) for p in MODULES}, f"listed but gone: {sorted(listed - {rel(p) for p in MODULES})}"


def test_no_module_over_400_lines():
    long = {rel(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_no_module_only_re_exports():
    """A module whose body is imports (and a docstring) only is a shim: import from the name's one home."""
    shims = []
    for p in MODULES:
        body = ast.parse(p.read_text()).body
        body = body[1:] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
        imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))
                   and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        if imports and len(imports) == len([n for n in body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]):
            shims.append(rel(p))
    assert not shims, shims


def comments_and_docstrings(text: str) -> str:
    out = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
           if t.type in (tokenize.COMMENT, tokenize.STRING)]
    return "\n".join(out)


def test_comments_say_why_not_history():
    """No project history in the code's comments and docstrings: issue numbers, "old home"."""
    pattern = re.compile(r"\bissue\s*#?\d+|\bold home|\bits old name|\bREADME\b", re.IGNORECASE)
    hits = [f"{rel(p)}: {m.group(0)}" for p in MODULES
            for m in pattern.finditer(comments_and_docstrings(p.read_text()))]
    assert not hits, hits


def test_readme_is_a_front_door():
    """At most 150 lines, the two commands first, and every document it links exists."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    assert lines[2] == "```bash" and "pip install -e" in lines[3] and "multimem demo" in lines[3]
    assert lines[4].startswith("python -m pytest") and lines[5] == "```"
    links = re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines))
    assert links and all((ROOT / link).is_file() for link in links), [l for l in links if not (ROOT / l).is_file()]
