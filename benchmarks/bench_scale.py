"""Does the cost of `multimem score` grow linearly in rows? Time and peak memory per stage at several sizes.

Builds photo-sized image+caption sets from the two photographs scikit-learn ships (`china.jpg`, `flower.jpg`):
every row a distinct file (a random crop, flipped or not, with its own brightness, saved as a 640 to 1280 px
JPEG) with a caption of what the crop shows. Nothing downloads. The sets of every size are prefixes of one
set of photos (built once, kept in --data). Each size is scored with default options (`multimem score
--modalities image,text --quiet`, plus --score-args, the same at every size) in its own process tree; while it runs, the proportional set size (PSS:
shared pages split between the processes that map them) of the whole tree is sampled, and attributed to the
stage the run reports in progress.json. Stage times are the run's own (RUN/timings.json).

    python benchmarks/bench_scale.py                          # 1k, 4k and 16k rows
    python benchmarks/bench_scale.py --sizes 500,1000         # a quick look
    python benchmarks/bench_scale.py --sizes 2000 --results /tmp/scale.json   # one size now, others later:
                                                              # the ratio is computed over every size recorded
    python benchmarks/bench_scale.py --score-args "--image-views 1"   # options of `multimem score`, every size

Last line: per_row_ratio_<big>_<small>=<time per row at the largest size / at the second largest>
peak_gb_<big>=<peak PSS of the tree at the largest size, GB> (per_row_ratio_16k_4k and peak_gb_16k by default).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_crops import random_photo_crop  # noqa: E402
from process_tree import tree_memory  # noqa: E402

LIGHT = {-1: "dim", 0: "", 1: "bright"}


def label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def build_photos(root: Path, n: int, *, seed: int = 0) -> None:
    """Photos 0 .. n-1 under root/img (the ones already there are kept: a set grows, never changes)."""
    from PIL import Image, ImageEnhance

    (root / "img").mkdir(parents=True, exist_ok=True)
    meta = root / "captions.jsonl"
    have = meta.read_text().splitlines() if meta.is_file() else []
    with meta.open("a") as out:
        for i in range(len(have), n):
            rng = np.random.default_rng([seed, i])  # photo i is the same whatever the size asked
            img, subject, region = random_photo_crop(rng, long_side=(640, 1280), resample=Image.BILINEAR)
            flip = bool(rng.integers(2))
            if flip:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            light = int(rng.integers(-1, 2))
            img = ImageEnhance.Brightness(img).enhance(1 + 0.25 * light)
            path = f"img/{i:06d}.jpg"
            img.save(root / path, quality=85)
            words = " ".join(w for w in (LIGHT[light], "mirrored" if flip else "") if w)
            text = f"A {words + ' ' if words else ''}photo of {subject}, the {region} part of the scene."
            out.write(json.dumps({"id": f"photo{i:06d}", "image": path, "text": text}) + "\n")


def manifest(root: Path, n: int) -> Path:
    rows = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()[:n]]
    path = root / f"photos_{n}.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "text"])
        w.writeheader()
        w.writerows(rows)
    return path


def measure(manifest_path: Path, run: Path, *, options: list[str], interval: float = 0.5) -> dict:
    """Score `manifest_path` into `run` (default options and `options`); wall time, stage times, peak PSS
    per stage, the load average before and after."""
    cmd = [sys.executable, "-m", "multimem_core.cli", "score", str(manifest_path), "--out", str(run),
           "--modalities", "image,text", "--quiet", *options]
    load_before = os.getloadavg()
    peaks: dict[str, int] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root, stage = psutil.Process(proc.pid), "start"
    while proc.poll() is None:
        try:
            stage = json.loads((run / "progress.json").read_text()).get("stage", stage)
        except (OSError, ValueError):
            pass
        peaks[stage] = max(peaks.get(stage, 0), tree_memory(root)[0])
        time.sleep(interval)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"multimem score failed on {manifest_path}:\n{err[-3000:]}")
    timings = json.loads((run / "timings.json").read_text())
    return {"wall_s": wall, "stages_s": timings, "peak_bytes": peaks, "peak_total": max(peaks.values()),
            "options": options, "load_before": load_before, "load_after": os.getloadavg()}


def report(n: int, m: dict) -> None:
    print(f"\n{label(n)} rows: {m['wall_s']:.1f} s wall, {m['wall_s'] / n * 1000:.1f} ms per row, "
          f"peak {m['peak_total'] / 1e9:.2f} GB (PSS of the process tree); load average "
          f"{' '.join(f'{x:.2f}' for x in m['load_before'])} before, {' '.join(f'{x:.2f}' for x in m['load_after'])} after")
    print(f"    {'stage':<11}{'time s':>9}{'ms/row':>9}{'peak GB':>9}")
    for stage, sec in m["stages_s"].items():
        peak = m["peak_bytes"].get(stage)
        print(f"    {stage:<11}{sec:>9.1f}{sec / n * 1000:>9.2f}{(peak or 0) / 1e9:>9.2f}")


def project(a: dict, n_a: int, b: dict, n_b: int, n: int) -> None:
    """Per stage, a fixed cost plus a cost per row fitted through two sizes, extrapolated to n rows (this
    machine, these options): the measured half of docs/SCALE.md's cost model."""
    print(f"\nper stage, fitted through {label(n_a)} and {label(n_b)}: fixed s + ms per row -> {label(n)} rows")
    total = 0.0
    for stage in b["stages_s"]:
        ta, tb = a["stages_s"].get(stage, 0.0), b["stages_s"][stage]
        per_row = max(0.0, (tb - ta) / (n_b - n_a))
        fixed = max(0.0, tb - per_row * n_b)
        total += fixed + per_row * n
        print(f"    {stage:<11}{fixed:>8.1f} s + {per_row * 1000:>7.3f} ms/row -> {(fixed + per_row * n) / 3600:>7.2f} h")
    print(f"    {'total':<11}{'':>32}{total / 3600:>7.2f} h")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,4000,16000", help="comma-separated row counts")
    p.add_argument("--data", type=Path, default=Path("/tmp/bench-scale-photos"),
                   help="where the photos are built (and reused by later invocations)")
    p.add_argument("--results", type=Path, help="JSON file that keeps every size measured, for the ratio")
    p.add_argument("--score-args", default="",
                   help="more options for `multimem score`, the same at every size (e.g. '--image-views 1': a "
                        "quarter of the image encoder's passes per row); recorded with each size")
    p.add_argument("--keep-runs", action="store_true", help="keep the run directories (in --data)")
    args = p.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    t = time.perf_counter()
    build_photos(args.data, max(sizes))
    print(f"photos: {max(sizes)} in {args.data} ({time.perf_counter() - t:.1f} s to build the missing ones)")
    options = shlex.split(args.score_args)
    results = json.loads(args.results.read_text()) if args.results and args.results.is_file() else {}
    other = sorted(int(k) for k, m in results.items() if m.get("options", []) != options)
    if other:
        raise SystemExit(f"{args.results}: sizes {other} were measured with other options than {options}; "
                         f"a ratio compares one set of options (use another --results file)")
    print(f"each size: multimem score photos_N.csv --modalities image,text --quiet {' '.join(options)}".rstrip())
    for n in sizes:
        run = args.data / f"run_{n}"
        shutil.rmtree(run, ignore_errors=True)
        m = measure(manifest(args.data, n), run, options=options)
        m["cpus"] = os.cpu_count()
        report(n, m)
        results[str(n)] = m
        if args.results:
            args.results.write_text(json.dumps(results, indent=1))
        if not args.keep_runs:
            shutil.rmtree(run, ignore_errors=True)
    done = sorted(int(k) for k in results)
    if len(done) < 2:
        print(f"per_row_ratio=nan peak_gb_{label(done[-1])}={results[str(done[-1])]['peak_total'] / 1e9:.2f}")
        return
    small, big = done[-2], done[-1]
    project(results[str(small)], small, results[str(big)], big, 1_000_000)
    ratio = (results[str(big)]["wall_s"] / big) / (results[str(small)]["wall_s"] / small)
    print(f"per_row_ratio_{label(big)}_{label(small)}={ratio:.3f} peak_gb_{label(big)}="
          f"{results[str(big)]['peak_total'] / 1e9:.2f}")


if __name__ == "__main__":
    main()
