"""Mitigation, one module per responsibility (`multimem_core.mitigate` is the entry point).

settings   MitigateConfig, the strategies and rankings, folder names
session    one request on one run: inputs, base models and numbers, re-scoring, the control
remove     post-training removal and fine-tuning
regroup    in-training regrouping of the most memorized samples
study      the augmentation study (which modalities to augment)
results    read-only: the mitigations of a run, removal curves, the printed report (the dashboard reads this)
"""
