"""Mitigation (`multimem mitigate RUN --strategy …`): memorize less, generalize better, and measure both.

Three strategies, each a folder RUN/mitigation/<name>/ with config.json and metrics.json (memorization
before and after, overall and per modality pair, downstream evaluation before and after, time):

remove   post-training: drop the top N samples by a ranking (MultiMem, the cosine or CLIPMem baselines,
         or random), fine-tune every model of the run on what is left of its training set, re-score,
         evaluate. `sweep` runs several N for every ranking (the paper's Figure 5 d–f); N = 0 is the
         control (the same fine-tuning with nothing removed).
regroup  in-training: train the run's models again from the same seed; every `every` epochs score the
         model's training samples (its CMC now minus the CMC of the run's model that never saw them),
         put the most memorized `top_frac` into mini-batches of their own and give those batches the
         targeted augmentations (multimem_core.targeted). The control is the run itself (same seed,
         epochs and data), or a plain training when `epochs` overrides the run's.
augment  the augmentation study (the paper's Table 3): train with the targeted augmentations on every
         sample, applied to one subset of modalities (or to every non-empty subset in turn).

After training, samples are re-scored the way the run scored them (same views, seed and protocol, with
every model replaced by its mitigated version), so before and after are measured alike.

One module per responsibility:

settings   MitigateConfig, the strategies and rankings, folder names
session    one request on one run: inputs, base models and numbers, re-scoring, the control
remove     post-training removal and fine-tuning
regroup    in-training regrouping of the most memorized samples
study      the augmentation study (which modalities to augment)
results    read-only: the mitigations of a run, removal curves, the printed report (the dashboard reads this)
"""

from __future__ import annotations

from ..run import RunDir
from ..runlock import RunLock
from .settings import MitigateConfig


def mitigate(run: RunDir | str, cfg: MitigateConfig) -> dict:
    """Run one mitigation on a finished run; returns its metrics (also in RUN/mitigation/<name>/metrics.json)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    from .regroup import run_regroup  # training code: loaded only when a mitigation runs
    from .remove import run_remove
    from .session import Session
    from .study import run_augment

    with RunLock(run.path, f"multimem mitigate --strategy {cfg.strategy}"):  # one writer per run
        session = Session(run, cfg)
        session.open_folder()
        return {"remove": run_remove, "regroup": run_regroup, "augment": run_augment}[cfg.strategy](session)
