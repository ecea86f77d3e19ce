"""The self-check with virtual swaps, recomputed on finished runs without training again.

For each run (bench_real.py's runs of sets with known swaps, or the demos): reload its models and its cached
encoder features, embed every row again with the run's seeds (the same views as the run's own pass; the
largest difference from the run's `cmc_out` is printed as a check), form the virtual swaps the run would form
today (planting.plan_virtual, virtual.py), and compare the self-check's estimate for each candidate ranking
with the truth: today's estimator with the virtual swaps for `-cmc_out`, beside the estimate the run
recorded. The virtual swaps' scores are written to OUT/<run>.parquet (never into the run), so that
`--from OUT` recomputes the table without embedding again; a run made with virtual swaps is read as it is.

    python benchmarks/selfcheck_virtual.py RUN[:TRUTH.csv] ... --out /tmp/virtual [--from /tmp/virtual]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from selfcheck_bias import truth_of  # noqa: E402

from multimem_core.run import RunDir  # noqa: E402
from multimem_core.selfcheck import (CANDIDATES, VIRTUAL_CANDIDATES, VIRTUAL_FILE, auroc, oriented,  # noqa: E402
                                     run_selfcheck)


def stored_features(run: RunDir, modality: str):
    """The run's cached encoder features of a modality (.npy, or .safetensors from older runs), or None."""
    import torch

    found = sorted(run.cache_dir.glob(f"features_{modality}_*"))
    if len(found) != 1:
        return None
    if found[0].suffix == ".npy":
        return torch.from_numpy(np.load(found[0]))
    from safetensors.torch import load_file

    return load_file(str(found[0]))["features"]


def rebuild_virtual(run: RunDir) -> tuple[pd.DataFrame, float]:
    """Embed the run again with its models and seeds; the virtual swaps' table and max |Δ cmc_out| vs the run."""
    import torch

    from multimem_core.inputs import decode, read_input
    from multimem_core.metric import cmc_from_terms
    from multimem_core.models.factory import create_model
    from multimem_core.planting import plan_planted, plan_virtual, with_planted
    from multimem_core.protocol import assign
    from multimem_core.restore import load_run_model, score_config_of
    from multimem_core.score import embed_terms
    from multimem_core.virtual import SourceViews, virtual_cmc, virtual_table

    cfg = score_config_of(run)
    samples = run.samples()
    ids = samples["id"].astype(str).tolist()
    mods = list(cfg.modalities)
    assignment = assign(len(ids), cfg.protocol)
    assert np.array_equal(assignment.roles, samples["role"].astype(str).to_numpy()), "roles differ"
    torch.manual_seed(cfg.train.seed)
    proto = create_model(cfg.model_config(mods))
    data, decoded = {}, None
    for m in mods:
        feats = stored_features(run, m) if getattr(proto.towers[m], "encoder_name", None) else None
        if feats is None:
            if decoded is None:
                source = read_input(cfg.input, keys=cfg.keys, modalities=mods)
                decoded = decode(source, mods, cfg.media, run.cache_dir, progress=False)
            feats = proto.towers[m].prepare(decoded.arrays[m])
        data[m] = feats
    n = len(ids)
    plan = plan_planted(assignment.roles, mods, cfg.selfcheck)
    virtual = plan_virtual(assignment.roles, mods, cfg.selfcheck)
    data = with_planted(data, plan)
    scores = run.scores().set_index("id")
    sources, worst = {}, 0.0
    for name in assignment.train_sets:
        model = load_run_model(run, name)
        sources[name] = SourceViews.of(virtual, name)
        terms = embed_terms(model, data, heldout=assignment.reference(name), n=n + len(plan), views=cfg.views,
                            aug=cfg.train.augment, seed=cfg.train.seed, chunk=cfg.chunk_size, device=torch.device("cpu"),
                            clean_out=None, progress=False, desc=name, kept=n, watch=sources[name])
        rows = np.flatnonzero(assignment.roles == name)
        again = cmc_from_terms(terms).numpy()[rows]
        worst = max(worst, float(np.abs(again - scores.loc[[ids[i] for i in rows], "cmc_out"].to_numpy()).max()))
    return virtual_table(virtual, ids, virtual_cmc(virtual, mods, sources)), worst


def compare(run: RunDir, truth: pd.Series, vtable: pd.DataFrame) -> list[dict]:
    scores = run.scores()
    scores = scores[np.isfinite(scores["multimem"].to_numpy(dtype=float))]
    planted = pd.read_parquet(run.path / "selfcheck.parquet")
    bad = scores["id"].astype(str).map(truth).fillna("").to_numpy() != ""
    given = {c: oriented(planted, c) for c in CANDIDATES} | {c: oriented(vtable, c) for c in VIRTUAL_CANDIDATES}
    new = run_selfcheck(given, {c: oriented(scores, c) for c in CANDIDATES},
                        paired={c: oriented(planted, c) for c in CANDIDATES})
    old = run.config().get("selfcheck", {})
    rows = []
    for c in CANDIDATES:
        s = oriented(scores, c)
        true = auroc(s[bad], s[~bad])
        e, o = new["candidates"][c], old.get("candidates", {}).get(c, {})
        rows.append({"run": run.path.name, "ranking": c, "true": true, "old": o.get("expected_auroc", np.nan),
                     "new": e["expected_auroc"], "low": e["expected_auroc_low"], "high": e["expected_auroc_high"],
                     "delta": e["expected_auroc"] - true, "old_delta": o.get("expected_auroc", np.nan) - true,
                     "n_planted": e["n_planted"], "pi": e["contamination"], "pi_true": float(bad.mean()),
                     "planted_auroc": e["auroc_planted"], "chosen_new": c == new.get("ranking"),
                     "chosen_old": c == old.get("ranking")})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="RUN or RUN:TRUTH.csv")
    p.add_argument("--out", type=Path, help="write each run's virtual swaps here (OUT/<run>.parquet)")
    p.add_argument("--from", dest="saved", type=Path, help="read the virtual swaps saved by an earlier --out")
    args = p.parse_args()
    rows = []
    for spec in args.runs:
        path, _, given = spec.partition(":")
        run = RunDir(path)
        name = str(run.path.resolve()).strip("/").replace("/", "__")
        if (run.path / VIRTUAL_FILE).is_file():  # a run made with virtual swaps keeps its own
            vtable = pd.read_parquet(run.path / VIRTUAL_FILE)
        elif args.saved:
            vtable = pd.read_parquet(args.saved / f"{name}.parquet")
        else:
            vtable, worst = rebuild_virtual(run)
            print(f"{run.path}: {len(vtable)} virtual swaps; max |cmc_out again − the run's| = {worst:.2e}", flush=True)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                vtable.to_parquet(args.out / f"{name}.parquet")
        rows += compare(run, truth_of(run, given or None), vtable)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 220, "display.max_columns", 30):
        print(table.round(3).to_string(index=False))
        for who in ("new", "old"):
            chosen = table[table[f"chosen_{who}"]]
            d = chosen["delta" if who == "new" else "old_delta"]
            print(f"the {who} ranking: |estimate − true| mean {d.abs().mean():.3f}, max {d.abs().max():.3f}"
                  + (f"; truth inside the interval {int(((chosen['low'] <= chosen['true']) & (chosen['true'] <= chosen['high'])).sum())} of {len(chosen)}"
                     if who == "new" else ""))
    print(json.dumps({"runs": len(args.runs)}))


if __name__ == "__main__":
    main()
