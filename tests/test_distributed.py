"""torchrun with 2 processes (gloo on CPU) writes the run one process writes: the same scores, to 1e-5.

The processes share the frozen encoders' rows and the protocol's whole models (multimem_core/distributed.py).
Both sides run with one thread per process (torchrun's default): oneDNN's single-threaded 1×1 convolution
rounds differently from its multi-threaded one, which is a difference of threads, not of processes.
"""

import os
import subprocess
import sys

import numpy as np

from multimem_core.run import RunDir

OPTIONS = ["--modalities", "image,text", "--epochs", "2", "--batch-size", "32", "--image-size", "32",
           "--views", "2", "--no-projection", "--quiet"]


def _score(manifest, out, *, processes: int) -> RunDir:
    launch = [sys.executable, "-m", "multimem_core.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_port=29533",
        "-m", "multimem_core.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launch, "score", str(manifest), "--out", str(out), *OPTIONS], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return RunDir(out)


def test_torchrun_two_processes_score_like_one(tmp_path, shapes_manifest):
    one = _score(shapes_manifest, tmp_path / "one", processes=1)
    two = _score(shapes_manifest, tmp_path / "two", processes=2)
    assert two.config()["status"] == "complete" and two.config()["world_size"] == 2
    assert not list(two.cache_dir.glob("*.part*")), "the processes' feature parts are merged and removed"
    a, b = one.scores(), two.scores()
    assert list(a["id"]) == list(b["id"]) and len(a) == len(one.samples())
    numeric = [c for c in a.columns if a[c].dtype.kind == "f"]
    assert "multimem" in numeric and a["multimem"].notna().all()
    delta = max(float(np.nanmax(np.abs(a[c].to_numpy() - b[c].to_numpy()))) for c in numeric if a[c].notna().any())
    assert delta <= 1e-5, f"max |Δ| between 1 and 2 processes: {delta}"
    # the frozen image features of every row, encoded in two shares, are those one process encodes
    from multimem_core.inputs import cached_features

    cached = list(one.cache_dir.glob("features_*.npy"))
    assert len(cached) == 2
    for f in cached:
        assert (cached_features(f) == cached_features(two.cache_dir / f.name)).all()
