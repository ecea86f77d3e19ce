"""A contract-conformant run directory (DESIGN §6) with random-but-plausible data, made in seconds.

For developing the dashboard without waiting for training, and for the 100,000-sample benchmark.
Nothing here trains: embeddings are per-label prototypes plus noise, an injected sample's swapped
modality points at another label's prototype, the models that saw a sample pull its swapped modality
back toward the others (that is what memorization looks like), and every score is computed from those
embeddings the way the metric defines it. Media files are few (`n_media`) and shared across rows.

    python benchmarks/synthetic_run.py /tmp/synth --n 100000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from multimem_core import diagnose
from multimem_core.names import MODALITIES
from multimem_core.metric import CMCTerms, scores_from_terms
from multimem_core.run import RunDir
from multimem_core.names import pair_column

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 245), "yellow": (235, 220, 40),
           "magenta": (220, 50, 220), "cyan": (40, 220, 230)}
SHAPES = ("circle", "square", "triangle", "cross")
MOTIONS = ("up", "down", "left", "right")
PITCH_HZ = dict(zip(COLOURS, (261.6, 370.0, 523.3, 740.0, 1046.5, 1480.0)))
KIND_MODALITY = {"caption_swap": "text", "audio_swap": "audio", "video_swap": "video"}


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.8) & (np.abs(dy) <= r * 0.8)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.55)
    return ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r)) | ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r))


def _frame(colour: str, shape: str, size: int, cx: float, cy: float) -> np.ndarray:
    img = np.full((size, size, 3), 24, dtype=np.uint8)
    img[_shape_mask(shape, size, cx, cy, size * 0.22)] = COLOURS[colour]
    return img


def _write_media(root: Path, n_media: int, modalities: Sequence[str], rng: np.random.Generator) -> pd.DataFrame:
    """n_media (colour, shape, motion) items, each with the files of the asked modalities."""
    from multimem_core.data.synthetic import write_mp4, write_png, write_wav

    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    rows = []
    for j in range(n_media):
        colour = list(COLOURS)[j % len(COLOURS)]
        shape = SHAPES[(j // len(COLOURS)) % len(SHAPES)]
        motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
        row = {"colour": colour, "shape": shape, "motion": motion}
        if "image" in modalities:
            row["image"] = f"media/img_{j:04d}.png"
            write_png(root / row["image"], _frame(colour, shape, 96, 48, 48))
        if "audio" in modalities:
            row["audio"] = f"media/snd_{j:04d}.wav"
            t = np.arange(int(16000 * 0.8)) / 16000
            beeps = SHAPES.index(shape) + 1
            env = (np.sin(np.pi * beeps * t / 0.8) ** 2).astype(np.float32)
            write_wav(root / row["audio"], 0.4 * env * np.sin(2 * np.pi * PITCH_HZ[colour] * t), 16000)
        if "video" in modalities:
            row["video"] = f"media/vid_{j:04d}.mp4"
            vx, vy = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}[motion]
            frames = np.stack([_frame(colour, shape, 64, 32 + vx * (k - 4) * 3, 32 + vy * (k - 4) * 3)
                               for k in range(8)])
            write_mp4(root / row["video"], frames, fps=8)
        rows.append(row)
    return pd.DataFrame(rows)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_synthetic_run(path: str | Path, n: int, *, modalities: Sequence[str] = MODALITIES, seed: int = 0,
                       folds: int = 3, protocol: str = "crossfit", dim: int = 32, n_media: int = 96,
                       inject_rate: float = 0.1, heldout_fraction: float = 0.1, error_rate: float = 0.002,
                       projection: bool = True) -> RunDir:
    """Write a synthetic run at `path` (created; must be empty or absent) and return its RunDir."""
    t0 = time.perf_counter()
    modalities = [m for m in MODALITIES if m in modalities]
    if len(modalities) < 2:
        raise ValueError(f"need at least two modalities, got {modalities}")
    rng = np.random.default_rng(seed)
    path = Path(path).expanduser().resolve()
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} is not empty; give a new folder")
    run = RunDir(path / "run")
    root = path / "dataset"
    media = _write_media(root, min(n_media, n), modalities, rng)

    # --- samples: media shared across rows; captions vary per row --------------------------------------
    j = rng.integers(len(media), size=n)
    base = media.iloc[j].reset_index(drop=True)
    labels = (base["colour"] + " " + base["shape"]).to_numpy()
    ids = np.array([f"s{i:06d}" for i in range(n)])
    roles = np.empty(n, dtype=object)
    heldout = rng.random(n) < heldout_fraction
    if protocol == "crossfit":
        roles[:] = [f"fold{k}" for k in rng.integers(folds, size=n)]
        models = [f"fold{k}" for k in range(folds)]
    else:
        roles[:] = rng.choice(["S_S", "S_C", "S_I"], size=n)
        models = ["f", "g"]
    roles[heldout] = "H"
    kinds = [k for k, m in KIND_MODALITY.items() if m in modalities] + ["all_contradictory"]
    injected = np.full(n, "", dtype=object)
    candidates = np.flatnonzero(~heldout)
    chosen = rng.choice(candidates, size=int(inject_rate * len(candidates)), replace=False)
    injected[chosen] = rng.choice(kinds, size=len(chosen))

    # what each modality of a row actually shows: a media index (swaps point at another item)
    content = {m: j.copy() for m in modalities}
    for i in chosen:
        swapped = [KIND_MODALITY[injected[i]]] if injected[i] in KIND_MODALITY else [m for m in modalities if m != modalities[0]]
        for m in swapped:
            other = rng.integers(len(media))
            while media.at[other, "colour"] == media.at[j[i], "colour"]:
                other = rng.integers(len(media))
            content[m][i] = other
    text_item = media.iloc[content.get("text", j)].reset_index(drop=True)
    templates = ["a {c} {s} moving {d}", "{c} {s} that moves {d}", "there is a {c} {s}, it goes {d}",
                 "a small {c} {s} drifting {d} on a dark background"]
    t_idx = rng.integers(len(templates), size=n)
    samples = pd.DataFrame({"id": ids, "row": np.arange(n), "role": roles})
    if "text" in modalities:
        samples["text"] = [templates[t].format(c=c, s=s, d=d) for t, c, s, d in
                           zip(t_idx, text_item["colour"], text_item["shape"], text_item["motion"])]
    for m in ("image", "audio", "video"):
        if m in modalities:
            samples[m] = media[m].to_numpy()[content[m]]
    samples["label"] = labels
    samples["injected"] = injected

    # --- embeddings: per-item prototypes + per-model noise ----------------------------------------------
    protos = _normalise(rng.normal(size=(len(media), dim)).astype(np.float32))
    emb = {}
    for mi, model in enumerate(models):
        mrng = np.random.default_rng(seed + 1000 + mi)
        emb[model] = {m: _normalise(protos[content[m]] + 0.35 * mrng.normal(size=(n, dim)).astype(np.float32))
                      for m in modalities}
        folder = run.embeddings_dir / model
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ids.txt").write_text("\n".join(ids) + "\n")
        for m in modalities:
            np.save(folder / f"{m}.npy", emb[model][m].astype(np.float16))

    # --- similarity under the model that did not see a sample (out) and the ones that did (in) ----------
    ok = np.ones(n, dtype=bool)
    n_err = int(error_rate * n)
    err_rows = rng.choice(n, size=n_err, replace=False) if n_err else np.array([], dtype=int)
    ok[err_rows] = False
    scored = ok & ~heldout
    s_idx = np.flatnonzero(scored)
    out_model = np.array([r if protocol == "crossfit" else ("g" if r == "S_C" else "f") for r in roles[s_idx]])
    stack = {model: np.stack([emb[model][m] for m in modalities], axis=1) for model in models}  # [N, n, d]
    phi = np.empty((len(s_idx), len(modalities), dim), dtype=np.float32)
    for model in models:
        sel = out_model == model
        phi[sel] = stack[model][s_idx[sel]]
    sim_out = np.einsum("bnd,bmd->bnm", phi, phi)
    # memorization: the models that saw a sample pull all its modalities together, much more for bad pairs
    bad = (injected[s_idx] != "")[:, None, None]
    pull = np.where(bad, rng.uniform(0.3, 0.7, (len(s_idx), 1, 1)), rng.normal(0.0, 0.06, (len(s_idx), 1, 1)))
    sim_in = sim_out + pull * (1.0 - sim_out)
    eye = np.eye(len(modalities), dtype=bool)
    sim_in[:, eye] = 1.0
    sim_out[:, eye] = 1.0
    h = 0.02 * rng.normal(size=len(s_idx))
    # the metric's own terms: gram = the similarity matrix, cross = the same held-out similarity h for
    # every modality pair (so that any subset's CMC has the second term h)
    cross = torch.from_numpy(np.broadcast_to(h[:, None, None], sim_in.shape).astype(np.float32).copy())
    cols = scores_from_terms(CMCTerms(torch.from_numpy(sim_in.astype(np.float32)), cross),
                             CMCTerms(torch.from_numpy(sim_out.astype(np.float32)), cross), modalities=modalities)
    scores = pd.DataFrame({"id": ids[s_idx], "role": roles[s_idx],
                           **{k: v.numpy().astype(np.float64) for k, v in cols.items()}})
    if "image" in modalities and "text" in modalities:
        a, b = modalities.index("image"), modalities.index("text")
        scores["base__cosine"] = sim_in[:, a, b]
        scores["base__clipmem"] = scores[pair_column("image", "text")]
    else:
        off = ~eye
        scores["base__cosine"] = sim_in[:, off].mean(axis=1)
    scores["base__loss"] = np.log1p(np.exp(-4 * scores["base__cosine"].to_numpy())) + 0.05 * rng.random(len(s_idx))
    for c in scores.columns[2:]:
        scores[c] = scores[c].astype(np.float32)

    # --- write the run ------------------------------------------------------------------------------------
    root.mkdir(parents=True, exist_ok=True)
    manifest = samples.drop(columns=["row", "role"]).copy()
    manifest["source_url"] = [f"https://example.org/{i}" for i in ids]  # a column the engine ignores
    manifest.to_csv(root / "manifest.csv", index=False)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config({
        "modalities": modalities, "dataset_root": str(root),
        "protocol": {"name": protocol, **({"folds": folds} if protocol == "crossfit" else {})},
        "models": {m: {"trained_on": "all folds but " + m if protocol == "crossfit" else m} for m in models},
        "manifest": {"path": str(root / "manifest.csv"), "format": "csv",
                     "source_columns": {c: c for c in ["id", *modalities, "label", "injected"]}},
        "dataset": {"name": "synthetic", "n": n, "seed": seed}, "seed": seed, "embedding_dim": dim,
    })
    run.write_samples(samples)
    run.write_scores(scores)
    run.diagnostics_dir.mkdir(parents=True, exist_ok=True)
    np.save(run.diagnostics_dir / "sim_in.npy", sim_in.astype(np.float32))
    np.save(run.diagnostics_dir / "sim_out.npy", sim_out.astype(np.float32))
    errors = pd.DataFrame({"id": ids[err_rows], "row": err_rows.astype(int), "modality": modalities[-1],
                           "path": [str(samples.at[i, modalities[-1]]) for i in err_rows],
                           "reason": rng.choice(["truncated file", "zero-length audio", "no video stream"],
                                                size=len(err_rows))})
    run.write_errors(errors)
    diagnose.write_reasons(run)  # as the scoring pipeline does: the app reads them, never computes them
    if projection:
        centres = rng.normal(scale=6.0, size=(len(media), 2))
        proj = pd.DataFrame({"id": ids})
        xy = centres[j] + rng.normal(size=(n, 2))
        proj["x"], proj["y"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
        for m in modalities:
            xy = centres[content[m]] + rng.normal(size=(n, 2))
            proj[f"x__{m}"], proj[f"y__{m}"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
        run.write_projection(proj)
    (run.path / "timings.json").write_text(json.dumps({"synthetic": round(time.perf_counter() - t0, 3)}))
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--modalities", default=",".join(MODALITIES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t = time.perf_counter()
    run = make_synthetic_run(args.path, args.n, modalities=args.modalities.split(","), seed=args.seed)
    print(f"wrote {run.path} ({args.n} samples) in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
