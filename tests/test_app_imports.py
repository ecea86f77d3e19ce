"""The app reads run directories; it does not train. Rendering every page of the dashboard (in a fresh process,
as `multimem app` runs it) imports none of the training code: not train.py, not the scoring pipeline, not the
mitigation strategies. Only the what-if preview loads models, lazily, behind app/views/mitigation.preview_models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TRAINING = ("multimem_core.train", "multimem_core.score", "multimem_core.restore",
            "multimem_core.mitigation.session", "multimem_core.mitigation.remove", "multimem_core.mitigation.regroup",
            "multimem_core.mitigation.study", "multimem_core.models.factory")

SCRIPT = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, str(Path("benchmarks").resolve()))
from synthetic_run import make_synthetic_run  # writes a run without training anything

run = make_synthetic_run(Path(sys.argv[1]) / "run", 200, n_media=6, projection=False)
os.environ["MULTIMEM_RUN"] = str(run.path)
os.environ["MULTIMEM_DATA_ROOT"] = sys.argv[1]
import app  # noqa: F401
from streamlit.testing.v1 import AppTest

at = AppTest.from_file("app/main.py", default_timeout=120)
at.run()
errors = [str(e.value) for e in at.exception]
for page in sorted(p.name for p in Path("app/views").glob("*.py")):
    at.switch_page(f"views/{page}").run()
    errors += [f"{page}: {e.value}" for e in at.exception]
print(json.dumps({"errors": errors, "modules": sorted(m for m in sys.modules if m.startswith("multimem_core"))}))
"""


def test_rendering_every_page_imports_no_training_code(tmp_path):
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert not out["errors"], out["errors"]
    assert "multimem_core.mitigation.results" in out["modules"]  # the Mitigation page did render
    assert not [m for m in TRAINING if m in out["modules"]], out["modules"]
