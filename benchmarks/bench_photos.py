"""Time `multimem score --modalities image,text` with default options on ~800 photo-sized JPEGs.

The target: a CSV of about 800 real photos with English captions (columns id,image,text, relative
paths) scores with default options in under 15 minutes. No photo collection installs from the package
registries here, so this builds one from the two real photographs scikit-learn ships (`china.jpg`,
`flower.jpg`): random crops rescaled to camera-like sizes (480 to 1600 px on the long side, some in
grayscale, CMYK or PNG), each with an English caption of what the crop shows. Decoding cost, image modes
and the training work are those of a real photo CSV; what the captions say is not, so read the AUROC-free
output as a timing and completeness check only.

    python benchmarks/bench_photos.py                # 800 photos, prints wall time and per-stage times
    python benchmarks/bench_photos.py --n 200 --keep /tmp/photos
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_crops import random_photo_crop  # noqa: E402


def build_photo_csv(root: Path, n: int, *, seed: int = 0) -> Path:
    """Write n photo files and `photos.csv` (id,image,text) under root; return the CSV's path."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img, subject, region = random_photo_crop(rng, long_side=(480, 1600))
        mode = rng.choice(["RGB", "RGB", "RGB", "L", "CMYK", "png"])
        path = f"img/{i:05d}." + ("png" if mode == "png" else "jpg")
        (img if mode in ("RGB", "png") else img.convert(str(mode))).save(root / path, quality=90)
        tone = "black-and-white " if mode == "L" else ""
        rows.append({"id": f"photo{i:05d}", "image": path,
                     "text": f"A {tone}photo of {subject}, the {region} part of the scene."})
    out = root / "photos.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "text"])
        w.writeheader()
        w.writerows(rows)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=800, help="number of photos")
    p.add_argument("--keep", type=Path, help="build the photos and the run here instead of a temporary folder")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        t = time.perf_counter()
        manifest = build_photo_csv(root / "photos", args.n)
        print(f"built {args.n} photos in {time.perf_counter() - t:.1f} s: {manifest}")
        run = root / "run"
        cmd = ["multimem", "score", str(manifest), "--out", str(run), "--modalities", "image,text", "--quiet"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        scores = pd.read_parquet(run / "scores.parquet")
        timings = json.loads((run / "timings.json").read_text())
    print(f"multimem score (defaults, image+text) on {args.n} photos: {wall:.1f} s wall "
          f"({wall / 60:.1f} min, limit 15 min); {len(scores)} rows in scores.parquet, {scores.shape[1]} columns")
    print("    stages:", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


if __name__ == "__main__":
    main()
