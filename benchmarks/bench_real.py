"""`multimem score` with default options on real pictures, captions and sounds, 10 % of them swapped.

Two sets, built from real media that install from Debian's package registry (nothing is committed; the
built sets are cached in ~/.cache/multimem/real, or --cache):

  stamps        image+text, 800 samples: Tux Paint's stamps (`tuxpaint-stamps-default`: photographs and
                drawings of animals, food, vehicles, ... each with a one-line English description; the
                alphabet stamps are left out, they are letters, not pictures) and GCompris's photos
                (`gcompris-qt-data`: objects, animals, tools, monuments, named by their files), as JPEGs on
                a white background. 10 % of the captions are swapped among themselves.
  stamp-sounds  audio+image+text, every Tux Paint stamp that has a sound effect (a koala's grunt, a car's
                horn, ...) plus GCompris's farm animals with their calls. 10 % of the sounds are swapped.

The truth (which samples were swapped) is kept in truth.csv beside the manifest, never in the manifest.
Each set is scored by a `multimem score` subprocess (timed; peak memory of its whole process tree, as
proportional set size sampled with psutil), and the table shows per set: time, peak memory, the AUROC
of swapped vs clean for `multimem`, `-cmc_out` and each baseline, and the run's confidence (retrieval
recall@5 on the held-out set against chance, as `multimem summary` prints it).

    python benchmarks/bench_real.py                          # both sets, default options
    python benchmarks/bench_real.py --sets stamps -- --epochs 60 --image-tower mm-tiny
    python benchmarks/bench_real.py --json results.jsonl     # also append one JSON line per run

Options after `--` go to `multimem score` unchanged. Missing Debian packages are installed with
apt-get when running as root (with a message); otherwise the script says what to install.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

STAMPS = Path("/usr/share/tuxpaint/stamps")
GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
PACKAGES = {"tuxpaint-stamps-default": STAMPS, "gcompris-qt-data": GCOMPRIS_RCC}
# GCompris activities whose pictures are photographs named after what they show
GCOMPRIS_PHOTOS = ("lang", "erase", "categorization", "explore_world_animals", "explore_farm_animals",
                   "explore_monuments")
SWAP_RATE = 0.1
SETS = ("stamps", "stamp-sounds")


# --- the Debian packages ---------------------------------------------------------------------------

def ensure_packages() -> None:
    missing = [name for name, path in PACKAGES.items() if not path.is_dir()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"bench_real: needs the Debian packages {' '.join(missing)}: sudo apt-get install {' '.join(missing)}")
    print(f"bench_real: installing {' '.join(missing)} with apt-get (real pictures, captions and sounds)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def read_rcc(path: Path) -> dict[str, bytes]:
    """The files inside a Qt resource file (.rcc, how GCompris ships its data): path -> bytes."""
    b = path.read_bytes()
    if b[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">iiii", b[4:20])
    entry = 14 if version < 2 else 22
    out: dict[str, bytes] = {}

    def name(off: int) -> str:
        (n,) = struct.unpack(">H", b[names + off:names + off + 2])
        return b[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")

    def walk(i: int, prefix: str) -> None:
        e = tree + i * entry
        name_off, flags = struct.unpack(">iH", b[e:e + 6])
        here = name(name_off) if i else ""
        if flags & 2:  # a directory: its children follow
            count, first = struct.unpack(">ii", b[e + 6:e + 14])
            for c in range(first, first + count):
                walk(c, f"{prefix}{here}/" if here else prefix)
            return
        (off,) = struct.unpack(">i", b[e + 10:e + 14])
        (size,) = struct.unpack(">I", b[data + off:data + off + 4])
        raw = b[data + off + 4:data + off + 4 + size]
        if flags & 1:  # qCompress: 4-byte length, then zlib
            raw = zlib.decompress(raw[4:])
        elif flags & 4:
            return  # zstd-compressed entries: none in the files used here
        out[prefix + here] = raw

    walk(0, "")
    return out


# --- building the sets ------------------------------------------------------------------------------

def caption_from_name(stem: str) -> str:
    """'screwDriver2' -> 'A screw driver.'; 'polar_bear' -> 'A polar bear.'"""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", re.sub(r"\d+$", "", stem)).replace("_", " ").replace("-", " ")
    words = " ".join(words.lower().split())
    return f"{'An' if words[:1] in 'aeiou' else 'A'} {words}."


def save_photo(img: Image.Image, path: Path, *, max_side: int = 640) -> None:
    """A picture with transparency as a JPEG on white (what a photo CSV holds), at most max_side pixels."""
    img = img.convert("RGBA")
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    canvas.alpha_composite(img)
    canvas = canvas.convert("RGB")
    canvas.thumbnail((max_side, max_side))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=90)


def stamp_items() -> list[dict]:
    """Tux Paint stamps: picture, English description (first line of the .txt), sound effect if any."""
    items = []
    for png in sorted(STAMPS.rglob("*.png")):
        rel = png.relative_to(STAMPS)
        txt = png.with_suffix(".txt")
        if rel.parts[:2] == ("symbols", "alphabets") or not txt.is_file():
            continue
        caption = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
        sound = png.with_suffix(".ogg")
        items.append({"key": "tuxpaint/" + str(rel.with_suffix("")), "image": png, "text": caption,
                      "audio": sound if sound.is_file() else None})
    return items


def gcompris_items() -> list[dict]:
    """GCompris photos named by their files; farm animals also with their call (.ogg of the same name)."""
    items = []
    for activity in GCOMPRIS_PHOTOS:
        files = read_rcc(GCOMPRIS_RCC / f"{activity}.rcc")
        for path, raw in sorted(files.items()):
            if not path.endswith(".webp"):
                continue
            stem = Path(path).stem
            if stem in ("question", "background") or "background" in path:
                continue
            sound = files.get(path[:-5] + ".ogg")
            items.append({"key": f"gcompris/{activity}/{stem}", "image": raw, "text": caption_from_name(stem),
                          "audio": sound})
    return items


def swap(values: list, rate: float, rng: np.random.Generator) -> tuple[list, np.ndarray]:
    """Swap `rate` of the values among themselves (a cyclic shift: every chosen one gets another's);
    values equal to the one they replace are skipped. Returns the new values and which rows changed."""
    values = list(values)
    chosen = rng.choice(len(values), size=max(2, int(round(rate * len(values)))), replace=False)
    shifted = np.roll(chosen, 1)
    out = list(values)
    for dst, src in zip(chosen, shifted):
        out[dst] = values[src]
    changed = np.array([out[i] != values[i] for i in range(len(values))])
    return out, changed


def build_set(name: str, root: Path, *, n: int = 800, seed: int = 0) -> Path:
    """Write root/manifest.csv (id,image,text[,audio]) and root/truth.csv (id,injected); return the manifest."""
    manifest = root / "manifest.csv"
    if manifest.is_file() and (root / "truth.csv").is_file():
        return manifest
    ensure_packages()
    rng = np.random.default_rng(seed)
    items = stamp_items() + gcompris_items()
    if name == "stamps":
        pick = rng.choice(len(items), size=min(n, len(items)), replace=False)
        items = [items[i] for i in sorted(pick)]
    else:
        items = [it for it in items if it["audio"] is not None]
    rows = []
    for i, it in enumerate(items):
        sid = f"s{i:04d}"
        img = Image.open(it["image"] if isinstance(it["image"], Path) else io.BytesIO(it["image"]))
        save_photo(img, root / "img" / f"{sid}.jpg")
        row = {"id": sid, "image": f"img/{sid}.jpg", "text": it["text"], "source": it["key"]}
        if name == "stamp-sounds":
            dst = root / "audio" / f"{sid}.ogg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(it["audio"], Path):
                shutil.copyfile(it["audio"], dst)
            else:
                dst.write_bytes(it["audio"])
            row["audio"] = f"audio/{sid}.ogg"
        rows.append(row)
    table = pd.DataFrame(rows)
    column = "text" if name == "stamps" else "audio"
    table[column], changed = swap(table[column].tolist(), SWAP_RATE, rng)
    kind = "caption_swap" if name == "stamps" else "audio_swap"
    pd.DataFrame({"id": table["id"], "injected": np.where(changed, kind, "")}).to_csv(root / "truth.csv", index=False)
    table.drop(columns="source").to_csv(manifest, index=False)
    table[["id", "source"]].to_csv(root / "sources.csv", index=False)
    return manifest


# --- scoring ----------------------------------------------------------------------------------------

def run_tree_peak(cmd: list[str]) -> tuple[int, float, float]:
    """Run cmd; return (exit status, wall seconds, peak memory (PSS) of its process tree in GiB)."""
    import psutil

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [parent, *parent.children(recursive=True)]
                # PSS: shared pages (torch's libraries in every worker) count once, split among sharers
                peak = max(peak, sum(p.memory_full_info().pss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.5)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    rc = proc.wait()
    done.set()
    watcher.join()
    return rc, time.perf_counter() - t, peak / 2 ** 30


def score_set(name: str, manifest: Path, out: Path, extra: list[str]) -> dict:
    from multimem_core.names import LOWER_IS_WORSE
    from multimem_core.diagnose import auroc_table
    from multimem_core.run import RunDir

    modalities = "image,text" if name == "stamps" else "audio,image,text"
    cmd = ["multimem", "score", str(manifest), "--out", str(out), "--modalities", modalities, "--quiet", *extra]
    if out.exists():
        shutil.rmtree(out)  # a fresh run: the time is that of the whole command
    rc, wall, peak = run_tree_peak(cmd)
    if rc != 0:
        sys.exit(f"bench_real: {' '.join(cmd)} failed with status {rc}")
    run = RunDir(out)
    scores = run.scores()
    scores = scores[scores["role"] != "H"]
    truth = pd.read_csv(manifest.parent / "truth.csv", keep_default_na=False).set_index("id")["injected"]
    injected = scores["id"].map(truth).fillna("")
    cols = [c for c in scores.columns if c in ("multimem", "cmc_out") or c.startswith("base__")]
    table = auroc_table(scores, injected, cols)
    conf = run.config().get("confidence", {})
    return {"set": name, "n": int(len(scores)), "injected": int((injected != "").sum()), "options": extra,
            "seconds": round(wall, 1), "peak_gib": round(peak, 2),
            "auroc": {(f"-{r.score}" if r.score in LOWER_IS_WORSE else r.score): round(r.auroc, 3)
                      for r in table.itertuples()},
            "confidence": conf}


def format_row(r: dict) -> str:
    conf = r["confidence"]
    pairs = conf.get("pairs", {})
    conf_text = ", ".join(f"{k} {v['recall_at_5']:.2f} (chance {v['chance']:.2f})" for k, v in pairs.items()) or "-"
    best = max(r["auroc"].items(), key=lambda kv: kv[1])
    aurocs = " ".join(f"{k} {v:.3f}" for k, v in r["auroc"].items())
    return (f"{r['set']:<13} n={r['n']} swapped={r['injected']}  {r['seconds']:.0f} s  {r['peak_gib']:.2f} GiB\n"
            f"    AUROC: {aurocs}\n    best {best[0]} {best[1]:.3f}; confidence (recall@5 on H): {conf_text}"
            + ("  LOW" if conf.get("low") else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {', '.join(SETS)}")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "multimem" / "real",
                   help="where the built sets and runs are kept")
    p.add_argument("--json", type=Path, help="append one JSON line per scored set to this file")
    p.add_argument("--build-only", action="store_true", help="build (and cache) the sets, score nothing")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- then options for `multimem score`")
    args = p.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    for name in args.sets.split(","):
        if name not in SETS:
            sys.exit(f"bench_real: unknown set {name!r}; choose from {', '.join(SETS)}")
        t = time.perf_counter()
        manifest = build_set(name, args.cache / name)
        print(f"{name}: {manifest} ({time.perf_counter() - t:.1f} s to build or find)", flush=True)
        if args.build_only:
            continue
        tag = re.sub(r"[^A-Za-z0-9]+", "_", " ".join(extra)).strip("_") or "defaults"
        result = score_set(name, manifest, args.cache / "runs" / f"{name}__{tag}", extra)
        print(format_row(result), flush=True)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
