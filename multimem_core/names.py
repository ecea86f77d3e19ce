"""Names and rules shared by the engine and the dashboard: roles, who saw which row, score columns, and
how a long text is quoted on one line (`one_line`).

No imports beyond the standard library, so the app reads these without loading training code.

Roles (samples.parquet's `role`):
    paper:    S_S (shared), S_C (candidates), S_I (independent), H (held out).
              f trains on S_S ∪ S_C, g on S_S ∪ S_I. S_C is scored f − g, S_I g − f, S_S raw f − g.
    crossfit: "fold<k>" for a sample of fold k; model "fold<k>" trains on every fold but k.
    H is in no training set: the unrelated set of the CMC's second term, never scored by MultiMem.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

MODALITIES = ("image", "text", "audio", "video")
MEDIA_MODALITIES = tuple(m for m in MODALITIES if m != "text")  # held as files (or bytes), not as text

HELDOUT = "H"
PAPER_ROLES = ("S_S", "S_C", "S_I")
ROLES_PAPER = PAPER_ROLES + (HELDOUT,)
PAPER_MODELS = ("f", "g")

# The paper protocol's rules, one table: which model trains on each role, which scores it as "in" and
# "out", and which never saw it. S_S is scored f − g as the reference distribution although both saw
# it, so its `out` model is g while no model is unseen.
PAPER_TRAINS_ON = {"f": ("S_S", "S_C"), "g": ("S_S", "S_I")}
PAPER_IN_MODEL = {"S_C": "f", "S_I": "g", "S_S": "f"}
PAPER_OUT_MODEL = {"S_C": "g", "S_I": "f", "S_S": "g"}

ROLE_LABELS = {HELDOUT: "held out (no model trained on it)", "S_S": "shared (both models trained on it)",
               "S_C": "candidate (only f trained on it)", "S_I": "independent (only g trained on it)"}


def fold_role(k: int) -> str:
    return f"fold{k}"


def saw(model: str, role: str, protocol: str) -> bool:
    """Whether `model` trained on a sample of this role."""
    if role == HELDOUT:
        return False
    if protocol == "crossfit":
        return model != role
    return role in PAPER_TRAINS_ON.get(model, ())


def unseen_model(role: str, models: Sequence[str], protocol: str) -> str | None:
    """The model that did NOT train on a sample of this role (its honest view), or None when every model
    saw it (paper S_S). Any model is honest on the held-out set; the first is taken."""
    models = list(models)
    if not models:
        return None
    if role == HELDOUT:
        return models[0]
    if protocol == "crossfit":
        return role if role in models else None
    if not set(models) >= set(PAPER_MODELS):
        return models[0]   # a paper run with one model loaded: the only view there is
    return next((m for m in PAPER_MODELS if not saw(m, role, protocol)), None)


def role_label(role: str) -> str:
    """Which part of the protocol a sample is in, in words (never "role fold0")."""
    if role.startswith("fold") and role[4:].isdigit():
        return f"fold {role[4:]}"
    return ROLE_LABELS.get(role, role)


# --- score columns (scores.parquet) -------------------------------------------------------------------

MULTIMEM = "multimem"
CMC_IN = "cmc_in"
CMC_OUT = "cmc_out"
HEAD_COLUMNS = (MULTIMEM, CMC_IN, CMC_OUT)
PAIR = "pair__"
CONTRIB = "contrib__"
BASE = "base__"
COMBO = "combo__"  # a ranking combined from other columns (combo__meanrank: the self-check's candidate)
SCORE_PREFIXES = (PAIR, CONTRIB, BASE, COMBO)
# Columns where a LOWER value is the suspicious end (poor alignment: cosine, CMC). Every other score is
# "higher = more memorized / worse": multimem, pair__*, contrib__*, base__clipmem (a memorization score),
# base__loss. The one list every ranking uses (review's top:N, the Samples order, AUROC).
LOWER_IS_WORSE = ("base__cosine", CMC_IN, CMC_OUT)
SCORE_NAME = re.compile(r"[0-9A-Za-z_]+")  # what a score column's name is made of


def pair_column(a: str, b: str) -> str:
    return f"{PAIR}{a}__{b}"


def contrib_column(m: str) -> str:
    return f"{CONTRIB}{m}"


def base_column(name: str) -> str:
    return f"{BASE}{name}"


def score_columns(columns: Iterable[str]) -> list[str]:
    """multimem, cmc_in, cmc_out, then pair__*, contrib__*, base__*, combo__* as they appear.

    Only names of letters, digits and underscores, as the engine and the importers write them: a column of a
    score table from elsewhere named `base__![x](http://host/)` is not a score (its name would reach the
    dashboard's labels and captions, where Markdown makes the browser fetch it)."""
    columns = [c for c in columns if isinstance(c, str)]
    return [c for c in HEAD_COLUMNS if c in columns] + [c for c in columns if c.startswith(SCORE_PREFIXES)
                                                        and SCORE_NAME.fullmatch(c)]


def one_line(text: str, limit: int = 80) -> str:
    """`text` quoted on one line of at most `limit` characters: each run of whitespace (newlines included)
    becomes one space, and a longer text is cut and ends in "…" (a decoder's multi-line error in a summary)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"
