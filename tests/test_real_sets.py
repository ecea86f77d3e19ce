"""The real benchmark sets' machinery: swapping, truth files, the build on a tiny fake package folder,
the AUROC / precision-at-k helpers and the table. Checks that read an installed Debian package skip
with a reason where it is missing."""

from __future__ import annotations

import io
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_real  # noqa: E402
import real_sets  # noqa: E402
import real_sources  # noqa: E402
from real_sets import Item, RealSet, build, select, swap  # noqa: E402


def png_bytes(color: tuple[int, int, int], size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def test_swap_moves_the_rate_among_rows_and_reports_exactly_the_changed_ones():
    values = [f"caption {i}" for i in range(200)]
    out, changed = swap(values, 0.1, np.random.default_rng(3))
    assert sorted(out) == sorted(values)  # a permutation: nothing invented, nothing lost
    assert changed.sum() == 20
    assert all((o != v) == c for o, v, c in zip(out, values, changed))
    again, _ = swap(values, 0.1, np.random.default_rng(3))
    assert again == out  # seeded


def test_swap_does_not_count_equal_values_as_swapped():
    values = ["same"] * 50 + [f"other {i}" for i in range(50)]
    out, changed = swap(values, 0.5, np.random.default_rng(0))
    assert all((o != v) == c for o, v, c in zip(out, values, changed))
    assert changed.sum() < 50  # some same-for-same exchanges do not count


def fake_package(folder: Path, n: int = 40) -> Path:
    """A tiny package folder as Tux Paint lays its stamps out: picture, description, some sounds."""
    rng = np.random.default_rng(1)
    for i in range(n):
        sub = folder / ("animals" if i % 2 else "food")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"thing{i}.png").write_bytes(png_bytes(tuple(int(v) for v in rng.integers(0, 255, 3))))
        (sub / f"thing{i}.txt").write_text(f"Thing number {i}, a {sub.name} stamp.\nsecond line\n")
        (sub / f"thing{i}.ogg").write_bytes(b"OggS" + bytes([i]) * 16)
    return folder


def fake_set(folder: Path, modalities=("image", "text"), swapped="text") -> RealSet:
    def items(rng):
        return [Item(f"fake/{p.stem}", p.with_suffix(".txt").read_text().splitlines()[0], p, p.with_suffix(".ogg"))
                for p in sorted(folder.rglob("*.png"))]
    return RealSet("fake", modalities, "drawings", "tune", swapped, (), "a test folder", items, 30, seed=7)


def test_build_writes_manifest_without_truth_and_a_truth_that_matches_the_swaps(tmp_path):
    s = fake_set(fake_package(tmp_path / "pkg"))
    manifest = build(s, tmp_path / "cache")
    table = pd.read_csv(manifest, keep_default_na=False)
    truth = pd.read_csv(manifest.parent / "truth.csv", keep_default_na=False)
    sources = pd.read_csv(manifest.parent / "sources.csv", keep_default_na=False)
    assert list(table.columns) == ["id", "image", "text"]  # nothing in the manifest says what was swapped
    assert len(table) == len(truth) == 30
    assert (truth["injected"] == "caption_swap").sum() == 3
    original = {sid: next((tmp_path / "pkg").rglob(f"{key.split('/')[-1]}.txt")).read_text().splitlines()[0]
                for sid, key in zip(sources["id"], sources["source"])}
    for row, t in zip(table.itertuples(), truth.itertuples()):
        assert (row.text != original[row.id]) == (t.injected != "")
        if t.injected:
            assert row.text == original[t.swapped_from]
        assert (manifest.parent / row.image).is_file()
    with Image.open(manifest.parent / table["image"][0]) as im:
        assert im.format == "JPEG"
    # cached: a second build returns the same files untouched
    stamp = manifest.stat().st_mtime_ns
    assert build(s, tmp_path / "cache") == manifest and manifest.stat().st_mtime_ns == stamp


def test_build_of_a_sound_set_swaps_the_sounds_and_keeps_the_captions(tmp_path):
    s = fake_set(fake_package(tmp_path / "pkg"), ("audio", "text"), "audio")
    manifest = build(s, tmp_path / "cache")
    table = pd.read_csv(manifest, keep_default_na=False)
    truth = pd.read_csv(manifest.parent / "truth.csv", keep_default_na=False)
    assert list(table.columns) == ["id", "audio", "text"]
    swapped = truth["injected"] == "audio_swap"
    assert swapped.sum() == 3
    own = {r.id: r.text for r in table.itertuples()}
    for r, t in zip(table.itertuples(), truth.itertuples()):
        assert r.audio.startswith("audio/") and (manifest.parent / r.audio).is_file()
        if t.injected:
            assert r.audio == f"audio/{t.swapped_from}.ogg" and own[r.id] != own[t.swapped_from]
        else:
            assert r.audio == f"audio/{r.id}.ogg"


def test_registry_splits_and_select():
    sets = select("all")
    assert {s.split for s in sets} == {"tune", "validate"}
    validate = select("validate")
    assert any(s.modalities == ("image", "text") for s in validate)
    assert any("audio" in s.modalities for s in validate)
    assert [s.name for s in select("stamps,validate,stamps")][0] == "stamps"
    assert len({s.name for s in select("tune")} & {s.name for s in validate}) == 0
    with pytest.raises(SystemExit, match="unknown set"):
        select("no-such-set")


def test_auroc_and_precision_at_k_against_sklearn_and_by_hand():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.1
    s = rng.normal(size=300) + y
    s[:7] = np.nan
    ok = np.isfinite(s)
    assert bench_real.auroc(y, s) == pytest.approx(roc_auc_score(y[ok], s[ok]))
    assert bench_real.auroc(y, np.round(s, 1)) == pytest.approx(roc_auc_score(y[ok], np.round(s, 1)[ok]))
    y4 = np.array([True, True, False, False])
    assert bench_real.auroc(y4, np.array([4.0, 3, 2, 1])) == 1.0
    assert bench_real.auroc(y4, np.array([1.0, 2, 3, 4])) == 0.0
    assert bench_real.auroc(y4, np.ones(4)) == 0.5
    assert np.isnan(bench_real.auroc(np.zeros(4, bool), np.arange(4.0)))
    assert bench_real.precision_at_k(y4, np.array([4.0, 1, 3, 2])) == 0.5
    assert bench_real.precision_at_k(np.array([True, False, True]), np.array([np.nan, 1.0, 2.0])) == 1.0


def scores_frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(2)
    y = np.zeros(100, bool)
    y[:10] = True
    scores = pd.DataFrame({"id": [f"s{i:04d}" for i in range(100)],
                           "multimem": rng.normal(size=100) + 2 * y,
                           "cmc_out": rng.normal(size=100) - 3 * y,
                           "base__loss": rng.normal(size=100)})
    scores.loc[90:, "multimem"] = np.nan  # rows without the column: left out of its AUROC, counted
    return scores, y


def test_measure_orients_columns_counts_rows_and_scores_the_ranking():
    scores, y = scores_frame()
    m = bench_real.measure(scores, y, ranking="-cmc_out")
    assert set(m["auroc"]) == {"multimem", "-cmc_out", "base__loss"}
    assert m["rows_with"]["multimem"] == 90 and m["rows_with"]["-cmc_out"] == 100
    assert m["best"] == "-cmc_out" and m["auroc"]["-cmc_out"] > 0.9
    assert m["ranking_auroc"] == m["auroc"]["-cmc_out"]
    assert 0 <= m["precision_at_k"] <= 1
    assert "ranking_auroc" not in bench_real.measure(scores, y, ranking="mean_rank_not_a_column")
    assert "ranking_auroc" not in bench_real.measure(scores, y)


def result(**extra) -> dict:
    scores, y = scores_frame()
    r = {"set": "fake", "split": "validate", "rows": 100, "rows_scored": 90, "rows_in_scores": 100, "swapped": 10,
         "seconds": 12.3, "peak_gib": 1.5, "confidence": {"pairs": {"image-text": {"recall_at_5": 0.4}},
                                                           "chance": 0.05, "low": False}}
    r.update(bench_real.measure(scores, y, extra.get("ranking")))
    r.update(extra)
    return r


def test_table_prints_a_dash_without_an_estimate_and_truth_beside_the_estimate_with_one():
    plain = bench_real.format_table([result()])
    lines = plain.splitlines()
    assert len(lines) == 3 and lines[0].count("|") == lines[2].count("|")
    assert "| fake | validate | 100 | 90 | 10 | 12 s | 1.50 GiB |" in lines[2]
    assert "image-text 0.40 (chance 0.050)" in lines[2]
    assert lines[2].split(" | ")[-2] == "-"  # no ranking in the run's summary
    with_est = bench_real.format_table([result(ranking="-cmc_out", expected_auroc=0.9, expected_auroc_low=0.85,
                                               expected_auroc_high=0.95)])
    r = result(ranking="-cmc_out")
    assert f"`-cmc_out`: true {r['ranking_auroc']:.3f}, est. 0.90 (0.85–0.95)" in with_est
    cols = bench_real.format_columns([result()])
    assert "`multimem`" in cols and "(90 of 100 rows)" in cols


def test_caption_from_name_and_midi_file():
    assert real_sources.caption_from_name("screwDriver2") == "A screw driver."
    assert real_sources.caption_from_name("ice_cream") == "An ice cream."
    assert real_sources.words_from_name("human-old-hit-2") == "human old hit"
    mid = real_sources.midi_file([(0, bytes([0x90, 60, 100])), (960, bytes([0x80, 60, 0]))])
    assert mid[:4] == b"MThd" and struct.unpack(">IHHH", mid[4:14]) == (6, 0, 1, 480)
    assert mid[14:18] == b"MTrk" and struct.unpack(">I", mid[18:22])[0] == len(mid) - 22
    assert b"\x87\x40\x80" in mid  # 960 ticks as a variable-length number


@pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert missing (apt-get install librsvg2-bin)")
def test_svg_is_rendered_on_white(tmp_path):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect x="0" y="0" width="5" height="10"/></svg>'
    real_sets.save_photo(svg, tmp_path / "a.jpg")
    with Image.open(tmp_path / "a.jpg") as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb[:, : rgb.shape[1] // 3].mean() < 40 and rgb[:, -rgb.shape[1] // 3:].mean() > 215


def _installed(*packages: str) -> bool:
    return shutil.which("dpkg-query") is not None and not real_sets.missing_packages(packages)


@pytest.mark.skipif(not _installed("tuxpaint-stamps-default", "gcompris-qt-data"),
                    reason="needs tuxpaint-stamps-default and gcompris-qt-data")
def test_photos_holdout_shares_no_row_with_the_tune_sets():
    rng = np.random.default_rng(0)
    pool = real_sources.stamp_pool()
    stamps = real_sets.sample(pool, real_sources.STAMPS_SET.rows, np.random.default_rng(real_sources.STAMPS_SET.seed))
    tune = {it.key for it in stamps} | {it.key for it in real_sources.stamp_sounds(rng)}
    held = real_sources.photos_holdout(rng)
    assert held and not tune & {it.key for it in held}


@pytest.mark.skipif(not _installed("openclipart-png", "openclipart-svg"), reason="needs openclipart-png, openclipart-svg")
def test_openclipart_halves_are_disjoint():
    rng = np.random.default_rng(0)
    a, b = real_sources.openclipart_tune(rng), real_sources.openclipart_validate(rng)
    assert len(a) > 1000 and len(b) > 1000
    assert not {it.key for it in a} & {it.key for it in b}


def test_table_from_saved_results(tmp_path, capsys, monkeypatch):
    import json

    saved = tmp_path / "r.jsonl"
    saved.write_text(json.dumps(result()) + "\n" + json.dumps(result(set="other")) + "\n")
    monkeypatch.setattr(sys, "argv", ["bench_real.py", "--table", str(saved)])
    bench_real.main()
    out = capsys.readouterr().out
    assert "| fake | validate |" in out and "| other | validate |" in out and "- other: `multimem`" in out
