"""Files -> features of the frozen image tower, today's way against the product's fast path, in one run.

Both paths decode the same files the same way (the product's decoder: `load_image` on its thread pool, JPEGs
drafted at reduced size) and compute the cached views of `FrozenImageTower.prepare` (4 per image by default);
"today" is the code before the fast path, re-created here (`encode_views_today`): EfficientNet-Lite0 as
loaded, eager fp32, contiguous layout, 64 images per forward pass, IEEE denormals; "new" is the product's
`encode_views` with `load_image_encoder` (batch norms folded, channels-last, inference mode, 8 images per
forward pass, denormals flushed to zero on every thread). The two alternate (A B A B) so noise from a
shared machine falls on both. Also printed: the bare forward pass on pre-decoded photos per batch size, and
its GFLOP/s against a torch.mm peak measured here (fp32 and bf16, the faster).

The images: random crops of the two photographs scikit-learn ships, at 1024x768 (1 in 8 saved as PNG).

    flock /tmp/heavy.lock python benchmarks/bench_encode.py                  # 200 images, 2 rounds
    python benchmarks/bench_encode.py --images 40 --rounds 1 --dir /tmp/x   # a quick look

Last line: speedup=<new/today files->features> cosine_min=<min over images and views> peak_fraction=<z>
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from multimem_core.data.decode import WORKERS, ordered_map
from multimem_core.data.media import load_image
from multimem_core.augment import augment_image
from multimem_core.config import AugmentConfig, MediaSpec
from multimem_core.models.frozen_image import (EFFICIENTNET_SIZE, VIEW_CROP_SCALE, VIEW_JITTER, VIEW_TRANSLATE,
                                               encode_views, load_image_encoder)
from multimem_core.models.inference import flush_denormals


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo{i:04d}.{'png' if i % 8 == 7 else 'jpg'}" for i in range(n)]
    if all(p.is_file() for p in paths):
        return paths
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in load_sample_images().images]  # 640x427 each
    for i, path in enumerate(paths):
        img = photos[i % len(photos)]
        w = int(rng.integers(240, min(img.width, img.height * 4 // 3)))
        h = w * 3 // 4
        left, top = int(rng.integers(0, img.width - w + 1)), int(rng.integers(0, img.height - h + 1))
        crop = img.resize((1024, 768), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        crop.save(path, quality=90) if path.suffix == ".jpg" else crop.save(path)
    return paths


def decode(paths: list[Path], size: int) -> np.ndarray:
    return np.stack(list(ordered_map(lambda p: load_image(p, size, fit=MediaSpec().image_fit), paths, WORKERS)))


@torch.no_grad()
def encode_views_today(encoder, images: np.ndarray, *, views: int, seed: int = 0, chunk: int = 64) -> torch.Tensor:
    """frozen_image.encode_views as it was before the fast path: the same views, no denormal flushing."""
    aug = AugmentConfig(crop_scale=VIEW_CROP_SCALE, translate=VIEW_TRANSLATE, jitter=VIEW_JITTER)
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    out = torch.empty(len(images), views, encoder.dim)
    gen = torch.Generator().manual_seed(seed)
    for s in range(0, len(images), chunk):
        x = torch.as_tensor(np.ascontiguousarray(images[s:s + chunk])).float() / 255.0
        for v in range(views):
            xv = x if v == 0 else augment_image(x, aug, gen)
            if encoder.size is not None and (xv.shape[-1] != encoder.size or xv.shape[-2] != encoder.size):
                xv = F.interpolate(xv, size=(encoder.size, encoder.size), mode="bilinear", antialias=True,
                                   align_corners=False)
            xv = (xv - mean) / std
            for b in range(s, s + len(xv), encoder.batch):
                feats = encoder.net(xv[b - s:b - s + encoder.batch]).float()
                out[b:b + encoder.batch, v] = F.normalize(feats, dim=-1)
    return out


def files_to_features(encoder, paths: list[Path], views: int, today: bool) -> tuple[torch.Tensor, float, float]:
    """Features, wall seconds, CPU seconds of this process (steadier than wall time on a shared machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    encode = encode_views_today if today else encode_views
    feats = encode(encoder, decode(paths, EFFICIENTNET_SIZE), views=views)
    return feats, time.perf_counter() - start, time.process_time() - cpu


def mm_peak(n: int = 2048, reps: int = 5) -> dict[str, float]:
    """GFLOP/s of torch.mm on n x n matrices, best of `reps`, per dtype."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
        out[str(dtype).removeprefix("torch.")] = 2 * n ** 3 / best / 1e9
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_rates(net, images: np.ndarray, batches: list[int], flush: bool, reps: int = 3) -> dict[int, float]:
    """Images per second of the bare forward pass on decoded photos, normalised, best of `reps` passes over
    `images` in batches; `flush`: with denormals flushed to zero on every thread, as the product runs it."""
    x = torch.as_tensor(images).float() / 127.5 - 1
    x = x.repeat(-(-max(batches) // len(x)), 1, 1, 1)  # at least one batch of the largest size
    rates = {}
    for bs in batches:
        chunks = [x[i:i + bs] for i in range(0, len(x) - bs + 1, bs)]
        with torch.no_grad(), flush_denormals() if flush else contextlib.nullcontext():
            net(chunks[0])
            rates[bs] = bs * len(chunks) / min(_timed(lambda: [net(c) for c in chunks]) for _ in range(reps))
    return rates


def flops_per_image(net) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.rand(1, 3, EFFICIENTNET_SIZE, EFFICIENTNET_SIZE))
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--views", type=int, default=4, help="cached views per image (the tower's default: 4)")
    ap.add_argument("--rounds", type=int, default=2, help="A B pairs, alternating")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/i22-photos"))
    ap.add_argument("--batches", default="4,8,16,32,64", help="batch sizes of the bare forward pass")
    args = ap.parse_args()

    paths = make_images(args.dir, args.images)
    print(f"{len(paths)} images 1024x768 in {args.dir}, {args.views} views each, {torch.get_num_threads()} threads",
          flush=True)
    today, new = load_image_encoder("efficientnet-lite0", fast=False), load_image_encoder("efficientnet-lite0")
    for name, enc in (("today", today), ("new", new)):  # first calls set up oneDNN's kernels: not timed
        files_to_features(enc, paths[:16], args.views, name == "today")
    times: dict[str, list[float]] = {"today": [], "new": []}
    cpu: dict[str, list[float]] = {"today": [], "new": []}
    feats = {}
    for r in range(args.rounds):
        for name, enc in (("today", today), ("new", new)):
            feats[name], t, c = files_to_features(enc, paths, args.views, name == "today")
            times[name].append(t)
            cpu[name].append(c)
            print(f"round {r + 1} {name:5s}: {t:7.1f} s  {len(paths) / t:6.1f} files/s  "
                  f"{len(paths) * args.views / t:6.1f} views/s  ({c:.1f} CPU s)", flush=True)
    rate = {k: len(paths) * args.rounds / sum(v) for k, v in times.items()}
    speedup = rate["new"] / rate["today"]
    cos = F.cosine_similarity(feats["new"].flatten(0, 1), feats["today"].flatten(0, 1), dim=-1)
    print(f"files -> features: today {rate['today']:.1f} files/s, new {rate['new']:.1f} files/s "
          f"({speedup:.2f}x; by CPU time {sum(cpu['today']) / sum(cpu['new']):.2f}x); "
          f"cosine min {cos.min():.6f} mean {cos.mean():.6f}")

    start = time.perf_counter()
    images = decode(paths, EFFICIENTNET_SIZE)
    print(f"decode alone: {len(paths) / (time.perf_counter() - start):.1f} files/s ({WORKERS} threads)")

    flops = flops_per_image(today.net)
    peak = mm_peak()
    best_peak = max(peak.values())
    print(f"model: {flops / 1e9:.3f} GFLOP per image at {EFFICIENTNET_SIZE} px; torch.mm peak "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()))
    batches = [int(b) for b in args.batches.split(",")]
    fast_rates = forward_rates(new.net, images[:128], batches, flush=True)
    eager_rates = forward_rates(today.net, images[:128], [64], flush=False)
    for bs, r in fast_rates.items():
        print(f"bare forward new   batch {bs:4d}: {r:6.1f} images/s  {r * flops / 1e9:6.1f} GFLOP/s")
    r = eager_rates[64]
    print(f"bare forward today batch   64: {r:6.1f} images/s  {r * flops / 1e9:6.1f} GFLOP/s")
    best_bs = max(fast_rates, key=fast_rates.get)
    fraction = fast_rates[best_bs] * flops / 1e9 / best_peak
    print(f"best batch {best_bs}: {fraction:.1%} of the torch.mm peak ({best_peak:.1f} GFLOP/s)")
    print(f"speedup={speedup:.2f} cosine_min={cos.min():.5f} peak_fraction={fraction:.3f}")


if __name__ == "__main__":
    main()
