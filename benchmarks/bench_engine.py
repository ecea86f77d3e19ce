"""Engine benchmarks, printed as ratios from one run (these machines are noisy: never compare across runs).

(a) training samples/s of our loop (train.train_model: augmentations, LR schedule, checkpoints, progress)
    against a bare PyTorch loop over the same model, the same prepared tensors and the same batches;
(b) the share of `multimem demo`'s wall time spent outside training (from the run's timings.json);
(c) the demo's peak memory: the whole process tree (the CLI and its training workers) sampled every
    SAMPLE_EVERY_S with psutil, as the sum of PSS (shared pages such as torch's libraries counted once) and as the
    sum of RSS (shared pages counted in every process: an upper bound), and the largest single process;
(d) the demo's wall time beside a bare PyTorch loop's time for its training, in the same run: the demo's
    models, prepared tensors (its own cache), row counts, batch size and epochs, trained the way the demo
    trains them (one process per model, one thread each, side by side) but with nothing else: no
    augmentation, schedule, checkpoint or report. The bare loop runs `--bare-epochs` epochs and is
    projected to the demo's epochs (its time per epoch is steady); and the demo's AUROCs.

    python benchmarks/bench_engine.py                 # (a) only, about a minute
    python benchmarks/bench_engine.py --demo          # also (b), (c) and (d): runs `multimem demo` once
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_tree import tree_memory  # noqa: E402


# A PSS sample reads every mapping of each process (about 20 ms for a process that has imported torch): twice a
# second it took about 10 % of a core from the demo it timed; every 2 s a quarter of that, and the demo's
# memory phases (training, embedding) last far longer than 2 s.
SAMPLE_EVERY_S = 2.0


def bench_training_loop(n: int = 512, epochs: int = 2, modalities=("image", "text", "audio", "video")) -> dict:
    from multimem_core.data.decode import decode_manifest
    from multimem_core.data.manifest import read_manifest
    from multimem_core.config import MediaSpec
    from multimem_core.data.shapes import build_shapes
    from multimem_core.config import ModelConfig
    from multimem_core.models.factory import create_model
    from multimem_core.inputs import select
    from multimem_core.config import TrainConfig
    from multimem_core.train import contrastive_loss, train_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = read_manifest(build_shapes(tmp / "data", n=n, progress=False))
        decoded = decode_manifest(manifest, list(modalities), MediaSpec(image_size=32), tmp / "cache", progress=False)
        mcfg = ModelConfig(modalities=modalities, image_tower="mm-tiny", text_tower="mm-tiny")
        torch.manual_seed(0)
        model = create_model(mcfg)
        data = model.prepare(decoded.arrays)
        idx = np.arange(len(decoded.ids))
        cfg = TrainConfig(epochs=epochs, batch_size=128)

        # ours (warm-up epoch excluded by timing a second call on a fresh directory)
        t = time.perf_counter()
        train_model(model, data, idx, cfg, tmp / "ours", progress=False)
        ours = len(idx) * epochs / (time.perf_counter() - t)

        # bare loop: same model, tensors, batch size and optimiser; no augmentation, no checkpoints
        torch.manual_seed(0)
        bare_model = create_model(mcfg)
        opt = torch.optim.AdamW(bare_model.parameters(), lr=cfg.lr)
        t = time.perf_counter()
        for epoch in range(epochs):
            order = np.random.default_rng(epoch).permutation(idx)
            for s in range(0, len(order), cfg.batch_size):
                batch = select(data, order[s:s + cfg.batch_size])
                loss = contrastive_loss(bare_model(batch), bare_model.logit_scale)
                opt.zero_grad()
                loss.backward()
                opt.step()
        bare = len(idx) * epochs / (time.perf_counter() - t)
    return {"ours_samples_per_s": round(ours, 1), "bare_samples_per_s": round(bare, 1),
            "ratio_ours_over_bare": round(ours / bare, 3)}


def bench_demo(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "run"
        cmd = ["multimem", "demo", "--dataset", args.dataset, "--out", str(out), "--quiet", *args.demo_args]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        root, peak = psutil.Process(proc.pid), (0, 0, 0)
        while proc.poll() is None:
            peak = tuple(map(max, peak, tree_memory(root)))
            time.sleep(SAMPLE_EVERY_S)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(f"multimem demo failed with exit status {proc.returncode}")
        timings = json.loads((out / "timings.json").read_text())
        bare = bare_demo_training(out, args.bare_epochs)
        from multimem_core.run import RunDir
        from multimem_core.summary import summarize

        auroc = summarize(RunDir(out)).get("auroc", {})
    train = timings.get("train", 0.0)
    return {"bare": bare, "auroc": auroc, "demo_wall_s": round(wall, 1), "train_s": round(train, 1),
            "share_outside_training": round(1 - train / wall, 3),
            "peak_pss_gb": round(peak[0] / 1024**3, 2), "peak_rss_sum_gb": round(peak[1] / 1024**3, 2),
            "peak_rss_largest_gb": round(peak[2] / 1024**3, 2), "timings": timings}


def _bare_worker(run_dir: str, name: str, rows: int, epochs: int, queue) -> None:
    """One model of the demo trained by a bare loop in its own process on one thread; puts (name, seconds)."""
    torch.set_num_threads(1)
    from multimem_core.config import ScoreConfig
    from multimem_core.inputs import decode, prepare_cached, read_input
    from multimem_core.models.factory import create_model
    from multimem_core.run import RunDir
    from multimem_core.train import contrastive_loss

    run = RunDir(run_dir)
    cfg = ScoreConfig.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
    source = read_input(cfg.input, keys=cfg.keys, modalities=cfg.modalities)
    modalities = list(cfg.modalities or source.modalities)
    decoded = decode(source, modalities, cfg.media, run.cache_dir, progress=False)  # the demo's cache
    model_cfg = cfg.model_config(modalities)
    data = prepare_cached(create_model(model_cfg), decoded.arrays, run.cache_dir)
    idx = np.random.default_rng(0).choice(len(decoded.ids), rows, replace=rows > len(decoded.ids))
    torch.manual_seed(0)
    model = create_model(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    bs = cfg.train.batch_size
    t = time.perf_counter()
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(idx)
        for s in range(0, len(order), bs):
            batch = {m: x[order[s:s + bs]] for m, x in data.items()}
            loss = contrastive_loss(model(batch), model.logit_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
    queue.put((name, time.perf_counter() - t))


def bare_demo_training(run_dir: Path, epochs: int) -> dict:
    """The bare loop's training time for the demo in `run_dir`, projected from `epochs` to the demo's."""
    import multiprocessing as mp

    config = json.loads((run_dir / "config.json").read_text())
    models = config["models"]  # name -> trained rows ("samples": planted rows included) and epochs
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_bare_worker, args=(str(run_dir), name, int(m["samples"]), epochs, queue))
             for name, m in models.items()]
    for p in procs:
        p.start()
    seconds = {}
    while len(seconds) < len(procs):
        try:
            name, t = queue.get(timeout=5)
            seconds[name] = t
        except Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit("a bare-loop worker failed (its error is above)")
    for p in procs:
        p.join()
    demo_epochs = int(config["train"]["epochs"])
    return {"epochs_run": epochs, "demo_epochs": demo_epochs,
            "train_s_projected": round(max(seconds.values()) / epochs * demo_epochs, 1),
            "per_model_s": {k: round(v, 1) for k, v in seconds.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true", help="also time a full `multimem demo`")
    p.add_argument("--dataset", default="emoji", help="the built-in dataset of the demo (default: multimem demo's own)")
    p.add_argument("--samples", type=int, default=512, help="samples for the training-loop comparison")
    p.add_argument("--bare-epochs", type=int, default=5, help="epochs of the bare loop beside the demo (d)")
    p.add_argument("--out", help="keep the demo's run in this new directory (default: a temporary one)")
    p.add_argument("--skip-loop", action="store_true", help="skip (a): only the demo's figures")
    p.add_argument("demo_args", nargs="*", help="extra arguments for multimem demo (after --)")
    args = p.parse_args()
    if not args.skip_loop:
        loop = bench_training_loop(n=args.samples)
        print(f"(a) training loop: ours {loop['ours_samples_per_s']} samples/s, bare PyTorch "
              f"{loop['bare_samples_per_s']} samples/s -> ratio {loop['ratio_ours_over_bare']}")
    if args.demo:
        d = bench_demo(args)
        print(f"(b) multimem demo --dataset {args.dataset}: {d['demo_wall_s']} s wall, training {d['train_s']} s, "
              f"share outside training {d['share_outside_training']:.1%}")
        print(f"(c) peak memory of the demo's process tree: {d['peak_pss_gb']} GB PSS "
              f"({d['peak_rss_sum_gb']} GB summing RSS; largest single process {d['peak_rss_largest_gb']} GB)")
        print("    stages:", ", ".join(f"{k} {v:.1f} s" for k, v in d["timings"].items()))
        b = d["bare"]
        print(f"(d) multimem demo --dataset {args.dataset}: {d['demo_wall_s']} s wall, training {d['train_s']} s; "
              f"bare PyTorch loop, the same training: {b['train_s_projected']} s (projected from {b['epochs_run']} "
              f"of {b['demo_epochs']} epochs, models side by side as in the demo)")
        best = max(d["auroc"], key=d["auroc"].get) if d["auroc"] else None
        if best:
            print(f"    AUROC injected vs clean: multimem {d['auroc'].get('multimem', float('nan')):.3f}, "
                  f"best {best} {d['auroc'][best]:.3f}")
        print(f"demo_wall_s={d['demo_wall_s']} bare_train_s={b['train_s_projected']} "
              f"auroc_multimem={d['auroc'].get('multimem', float('nan')):.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
