"""torchrun with 2 processes (gloo on CPU) writes the same kind of run as a single process."""

import subprocess
import sys

import pytest

from multimem_core.run import RunDir


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, shapes_manifest):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "multimem_core.cli", "score", str(shapes_manifest), "--out", str(out),
           "--modalities", "image,text", "--epochs", "2", "--batch-size", "64", "--image-size", "16",
           "--image-tower", "mm-tiny", "--text-tower", "mm-tiny",
           "--augmentations", "2", "--no-projection", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunDir(out)
    cfg = run.config()
    assert cfg["status"] == "complete" and cfg["world_size"] == 2
    scores = run.scores()
    assert len(scores) == len(run.samples().query("role != 'H'"))
    assert scores["multimem"].notna().all()
