"""Every bad input of tests/corpus/build.py gets its answer: kept, skipped and recorded with a reason a
person understands, or a clear stop naming the file. Nothing crashes; big inputs stay bounded.

The last test writes docs/CORPUS.md (case -> what happens, as observed here) when every case ran.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pandas as pd
import pytest

from corpus.build import CASES, MODALITIES_OF, Case, good_sample

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(image_size=16, video_frames=4, audio_seconds=0.5)
OBSERVED: dict[str, tuple[str, str]] = {}  # case key -> (answer, what it said)


def _decode(source, folder: Path):
    from multimem_core.config import MediaSpec

    if getattr(source, "format", None) == "webdataset":
        from multimem_core.data.shards import decode_shards

        return decode_shards(source, source.modalities, MediaSpec(**SPEC), folder / "cache", progress=False)
    from multimem_core.data.decode import decode_manifest

    return decode_manifest(source, source.modalities, MediaSpec(**SPEC), folder / "cache", progress=False)


def run_case(case: Case, folder: Path):
    """(input path, decoded) of a case, the way `multimem score` reads and decodes it."""
    from multimem_core.data.manifest import read_manifest

    if case.kind in MODALITIES_OF:
        mods = MODALITIES_OF[case.kind]
        rows = [good_sample(folder, i, mods) for i in range(2)] + [case.make(folder)]
        pd.DataFrame(rows, columns=["id", *mods]).to_csv(path := folder / "manifest.csv", index=False)
    else:
        path = case.make(folder)
    if case.stage == "score":
        from conftest import tiny_score_config
        from multimem_core.score import score_run

        score_run(tiny_score_config(path, folder / "run", projection=False))
        raise AssertionError("score_run went on; the case must stop before training")
    if case.kind == "shards":
        from multimem_core.data.shards import read_shards

        return path, _decode(read_shards(path), folder)
    return path, _decode(read_manifest(path), folder)


def answer(case: Case, folder: Path) -> tuple[str, str, object]:
    """(kept | skipped | stopped | crash, what it said, decoded or None)."""
    from multimem_core.data.manifest import ManifestError

    try:
        path, decoded = run_case(case, folder)
    except (ManifestError, ValueError) as e:
        return "stopped", str(e), None
    except Exception:
        return "crash", traceback.format_exc(), None
    bad = set(case.bad)
    errors = decoded.errors
    hit = errors[errors["id"].isin(bad)]
    if bad and len(hit):
        return "skipped", "; ".join(dict.fromkeys(hit["reason"])), decoded
    others = errors[~errors["id"].isin(bad)]
    if len(others):
        return "crash", f"good samples were skipped: {others.to_dict('records')}", decoded
    return "kept", "", decoded


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_case_gets_its_answer(case: Case, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    got, said, decoded = answer(case, folder)
    OBSERVED[case.key] = (got, _portable(said, tmp_path))
    assert got == case.expect, f"{case.title}: expected {case.expect}, got {got}: {said}"
    assert case.says.lower() in said.lower(), f"{case.title}: {said!r} does not say {case.says!r}"
    if got == "stopped":
        assert re.search(r"(manifest\.(csv|parquet)|shards|\.tar)", said), f"the message names no file: {said}"
    if got == "skipped":  # recorded per sample: the id, the row, the file
        rows = decoded.errors[decoded.errors["id"] == "bad"]
        assert rows["reason"].str.len().gt(0).all() and (rows["modality"] != "").all()
        media_rows = rows[rows["modality"] != "text"]  # a caption lives in the manifest: no file to name
        assert media_rows["path"].str.len().gt(0).all(), rows
    if got == "kept":
        assert set(case.bad) <= set(decoded.ids) if case.bad else len(decoded.ids) >= 3
    if case.key == "slash_id":
        assert "a/b" in decoded.ids
    if case.key == "exif_rotated":  # shown as a person sees it: red on top, blue below
        img = decoded.arrays["image"][decoded.ids.index("bad")].astype(int)  # [3, S, S]
        assert img[0, :4].mean() > img[2, :4].mean() + 100 and img[2, -4:].mean() > img[0, -4:].mean() + 100


OPENED: list[str] | None = None  # paths Python opens while a test records them (an audit hook cannot be removed)


def _record_opens(event: str, args: tuple) -> None:
    if OPENED is not None and event == "open" and isinstance(args[0], (str, Path)):
        OPENED.append(str(Path(args[0]).resolve()))


def test_refused_paths_are_never_opened(tmp_path):
    """`..`, absolute paths and symlinks out of the folder are refused on their resolved path, before any
    open() (an audit hook sees every file Python opens); --allow-outside-root reads them."""
    global OPENED
    from multimem_core.data.decode import decode_manifest
    from multimem_core.data.manifest import read_manifest
    from multimem_core.config import MediaSpec

    data, outside = tmp_path / "data", tmp_path / "outside"
    secret = png_outside = outside / "secret.png"
    from corpus.build import png

    png(png_outside)
    (data / "link.png").parent.mkdir(parents=True, exist_ok=True)
    (data / "link.png").symlink_to(secret)
    rows = [good_sample(data, i, ("image", "text")) for i in range(2)] + [
        {"id": "dotdot", "image": "../outside/secret.png", "text": "x"},
        {"id": "absolute", "image": str(secret), "text": "x"},
        {"id": "symlink", "image": "link.png", "text": "x"}]
    pd.DataFrame(rows).to_csv(data / "m.csv", index=False)
    sys.addaudithook(_record_opens)
    OPENED = []
    try:
        refused = decode_manifest(read_manifest(data / "m.csv"), ["image", "text"], MediaSpec(**SPEC),
                                  tmp_path / "c1", progress=False)
        opened_refusing = list(OPENED)
        OPENED = []
        allowed = decode_manifest(read_manifest(data / "m.csv"), ["image", "text"],
                                  MediaSpec(**SPEC, allow_outside_root=True), tmp_path / "c2", progress=False)
        opened_allowing = list(OPENED)
    finally:
        OPENED = None
    reasons = dict(zip(refused.errors["id"], refused.errors["reason"]))
    assert set(reasons) == {"dotdot", "absolute", "symlink"}
    assert "(..)" in reasons["dotdot"] and "absolute" in reasons["absolute"] and "symlink" in reasons["symlink"]
    assert all("not opened" in r for r in reasons.values())
    assert str(secret.resolve()) not in opened_refusing
    assert any(p.endswith("good/0.png") for p in opened_refusing)  # the hook does see the decoder's opens
    assert len(allowed.errors) == 0 and str(secret.resolve()) in opened_allowing


@pytest.mark.parametrize("case", [c for c in CASES if c.bounded_mb], ids=[c.key for c in CASES if c.bounded_mb])
def test_big_inputs_stay_bounded(case: Case, tmp_path):
    """Decoding a decompression bomb, a 10-minute recording or 4K frames grows the peak memory of a fresh
    process by less than `bounded_mb`, far below what decoding it whole takes (measured: the 44.1 kHz stereo
    recording read whole, 202 MB; six 4K frames as RGB, 197 MB; the bomb as RGB, 1.2 GB)."""
    row = case.make(tmp_path)
    modality = next(m for m in ("image", "audio", "video") if m in row)
    call = {"image": "load_image(p, 16, fit='crop')", "audio": "load_audio(p, 16000, 8000)", "video": "load_video(p, 4, 16)"}
    code = f"""
import json, sys
from multimem_core.data.media import MediaError, load_audio, load_image, load_video
def kb(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0])
p = sys.argv[1]
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to what is resident now
before = kb("VmRSS")
try:
    {call[modality]}
    said = "kept"
except MediaError as e:
    said = e.reason
print(json.dumps({{"grew_mb": (kb("VmHWM") - before) / 1024, "said": said}}))
"""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / row[modality])], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["grew_mb"] < case.bounded_mb, result
    assert (result["said"] == "kept") == (case.expect == "kept"), result


def _portable(text: str, tmp: Path) -> str:
    """A message without this machine's temporary paths, for the table."""
    text = text.replace(str(tmp.resolve()), "…").replace(str(tmp), "…")
    return re.sub(r"\s+", " ", text).strip()


ANSWER_WORDS = {"kept": "kept: decoded to the fixed shape", "skipped": "skipped, recorded in errors.parquet",
                "stopped": "stops with a message"}


def test_corpus_table():
    """docs/CORPUS.md from what the cases above observed (the README links it); no case crashed."""
    if set(OBSERVED) != {c.key for c in CASES}:
        pytest.skip("the table is written when every corpus case ran in this session")
    crashes = [k for k, (got, _) in OBSERVED.items() if got == "crash"]
    assert not crashes, crashes
    counts = {a: sum(got == a for got, _ in OBSERVED.values()) for a in ANSWER_WORDS}
    lines = ["# What MultiMem does with bad inputs", "",
             "Generated by `python -m pytest tests/test_corpus.py` from the corpus that `tests/corpus/build.py` makes "
             "(no media are committed). Each row is what the test observed.", "",
             f"{len(CASES)} cases: {counts['kept']} kept, {counts['skipped']} skipped and recorded, "
             f"{counts['stopped']} stopped with a clear message, {len(crashes)} crashes.", "",
             "| kind | case | answer | what it says |", "|---|---|---|---|"]
    for c in CASES:
        got, said = OBSERVED[c.key]
        said = said.replace("|", "\\|")
        lines.append(f"| {c.kind} | {c.title} | {ANSWER_WORDS[got]} | {(said or c.note)[:300]} |")
    target = REPO / "docs" / "CORPUS.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_5000_samples_with_5_percent_bad_rows_scored_with_default_options(tmp_path):
    """The must-show: `multimem score` with its default options on 5,000 image+text rows, 250 of them bad
    (every per-sample bad image and caption of the corpus and the path escapes, in turn). Every good row
    has a score, every bad row is in errors.parquet, and the console says how many and which."""
    from corpus.build import mixed_manifest

    from multimem_core.run import RunDir

    manifest, bad = mixed_manifest(tmp_path / "data", n=5000, bad_frac=0.05)
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "multimem_core.cli", "score", str(manifest), "--out", str(out),
                          "--quiet"], capture_output=True, text=True, cwd=REPO, timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = RunDir(out)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    good = set(table["id"]) - set(bad)
    scores = run.scores(heldout=True)
    errors = run.errors()
    assert set(errors["id"]) == set(bad) and set(scores["id"]) == good
    scored = scores[scores["role"] != "H"]
    assert scored["multimem"].notna().all() and scores["cmc_out"].notna().all()
    assert run.config()["n_skipped"] == len(bad) and run.is_complete()
    said = res.stdout + res.stderr
    assert f"skipped {len(bad)} of 5000 samples" in said and "… and" in said
    print(said[said.index("skipped"):][:1500])
    print(f"scored {len(scored)} + {len(scores) - len(scored)} held out; {len(errors['id'].unique())} bad rows in "
          f"errors.parquet; reasons: {errors['reason'].value_counts().to_dict()}")
