"""Reopening a finished run: its configuration, its decoded inputs and its saved models.

Evaluation, mitigation and the what-if preview all start from a run directory made by `score_run`.
They rebuild exactly what it used (the same ScoreConfig, the decode cache in RUN/cache, the protocol's
assignment, the prepared tensors) instead of copying its logic, and check that the rebuilt samples and
roles match RUN/samples.parquet, so a moved or edited dataset fails loudly instead of scoring the
wrong rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from .config import ScoreConfig
from .inputs import decode, prepare_cached, read_input
from .models.factory import MultiTowerModel, create_model
from .protocol import Assignment, assign
from .run import RunDir, RunDirError
from .train import resolve_device


def score_config_of(run: RunDir) -> ScoreConfig:
    """The ScoreConfig a run was made with, from RUN/config.json (its input where it lies now)."""
    c = run.config()
    if c.get("status") != "complete":
        raise RunDirError(f"{run.path} is not a complete run (status {c.get('status')!r}); "
                          f"finish it first: rerun the `multimem score` command that made it")
    return replace(ScoreConfig.from_dict(c), input=str(run.input_path), out=str(run.path), projection=False,
                   save_views=False, progress=True)


def model_names(run: RunDir) -> list[str]:
    """Models of the run that have final weights, in the config's order."""
    names = list(run.config().get("models", {})) or sorted(p.name for p in run.models_dir.iterdir())
    return [n for n in names if (run.models_dir / n / "model.safetensors").is_file()]


def load_run_model(run: RunDir, name: str, *, device: str | torch.device = "cpu") -> MultiTowerModel:
    """The model `name` of the run (e.g. "fold0", "f") with its final weights, in eval mode."""
    from safetensors.torch import load_model

    path = run.models_dir / name / "model.safetensors"
    if not path.is_file():
        have = ", ".join(model_names(run)) or "none"
        raise RunDirError(f"{path} does not exist: the run has no final weights for model {name!r} "
                          f"(models with weights: {have})")
    cfg = score_config_of(run)
    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model_config(cfg.modalities))
    load_model(model, str(path))
    return model.to(resolve_device(str(device))).eval()


@dataclass
class RunInputs:
    """What training and scoring consumed, rebuilt from the run directory."""

    cfg: ScoreConfig
    ids: list[str]
    data: dict[str, torch.Tensor]   # prepared tensors (token ids, pixels, waveforms), samples.parquet order
    # split 0 of the run's crossfit, whose models config.json names; a small set's run also trained `splits` - 1
    # more splits and averaged its scores over them (protocol.Assignment.repeats)
    assignment: Assignment
    samples: pd.DataFrame            # RUN/samples.parquet (same row order as `data`)
    texts: list[str] | None          # raw captions (for caption-level augmentations), if the run has text
    splits: int = 1

    @property
    def modalities(self) -> list[str]:
        return list(self.cfg.modalities)

    @property
    def n(self) -> int:
        return len(self.ids)

    def labels(self) -> np.ndarray | None:
        """The `label` column as strings ('' where missing), or None if the dataset has no labels."""
        if "label" not in self.samples.columns:
            return None
        lab = self.samples["label"].astype("string").fillna("").str.strip().to_numpy(dtype=object)
        return lab if (lab != "").any() else None

    def injected(self) -> np.ndarray:
        """Per sample, whether it carries an injected misalignment (built-in datasets; all False otherwise)."""
        col = self.samples["injected"] if "injected" in self.samples.columns else pd.Series([""] * self.n)
        return (col.fillna("").astype(str) != "").to_numpy()


def load_run_inputs(run: RunDir, *, progress: bool = False) -> RunInputs:
    """Decode (from RUN/cache when it is there) and prepare the run's data exactly as score_run did."""
    cfg = score_config_of(run)
    try:
        source = read_input(cfg.input, keys=cfg.keys, modalities=cfg.modalities)
    except FileNotFoundError as e:
        raise RunDirError(f"the input of {run.path} ({cfg.input}) cannot be read: {e}. Evaluation and "
                          "mitigation re-read the dataset; put it back where the run found it") from e
    decoded = decode(source, cfg.modalities, cfg.media, run.cache_dir, progress=progress)
    samples = run.samples()
    ids = list(decoded.ids)
    if ids != samples["id"].astype(str).tolist():
        raise RunDirError(f"the dataset at {cfg.input} no longer matches {run.samples_path} "
                          f"({len(ids)} samples decoded, {len(samples)} in the run): the manifest or its media "
                          "changed since the run was made; score it again")
    assignment = assign(len(ids), cfg.protocol)
    if not np.array_equal(assignment.roles, samples["role"].astype(str).to_numpy()):
        raise RunDirError(f"the roles in {run.samples_path} differ from what protocol {cfg.protocol.name} "
                          "assigns with the run's seed; was samples.parquet edited?")
    torch.manual_seed(cfg.train.seed)
    proto = create_model(cfg.model_config(cfg.modalities))
    data = prepare_cached(proto, decoded.arrays, run.cache_dir)
    texts = list(decoded.arrays["text"]) if "text" in decoded.arrays else None
    return RunInputs(cfg=cfg, ids=ids, data=data, assignment=replace(assignment, repeats=()), samples=samples,
                     texts=texts, splits=len(assignment.splits))
