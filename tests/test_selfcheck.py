"""Every row scored under crossfit, and the self-check: planted corruptions measure detection power."""

import json

import numpy as np
import pandas as pd
import pytest

from multimem_core.config import SelfCheckConfig
from multimem_core.planting import plan_planted
from multimem_core.selfcheck import (auroc, contamination, corrected, estimate, expected_wrong_in_top, mean_rank,
                                     mixture_share, run_selfcheck, tail_bound)


def mixture(rng, *, n=2000, pi=0.15, shift=2.0, planted=60):
    """Real rows: clean N(0, 1) with a share pi of bad rows N(shift, 1); planted rows drawn like bad ones."""
    bad = rng.random(n) < pi
    rest = np.where(bad, rng.normal(shift, 1, n), rng.normal(0, 1, n))
    return rng.normal(shift, 1, planted), rest, bad


def test_contamination_estimate_and_correction_recover_the_truth():
    rng = np.random.default_rng(0)
    pis, errors_raw, errors_corr = [], [], []
    for seed in range(20):
        r = np.random.default_rng(seed)
        planted, rest, bad = mixture(r, planted=400)
        true = auroc(rest[bad], rest[~bad])
        e = estimate(planted, rest, bootstrap=50)
        obs, pi, est = e["auroc_planted"], e["contamination"], e["expected_auroc"]
        pis.append(pi)
        errors_raw.append(obs - true)
        errors_corr.append(est - true)
    # the raw figure is biased low by about π/2·(2A − 1) ≈ 0.06; the corrected one is not
    assert np.mean(errors_raw) < -0.03
    assert abs(np.mean(errors_corr)) < 0.02
    assert 0.08 < np.mean(pis) < 0.25
    # no contamination: the estimate stays near zero, and the correction leaves AUROC alone
    planted, rest, _ = mixture(rng, pi=0.0)
    assert contamination(planted, rest) < 0.06
    assert corrected(0.8, 0.0) == pytest.approx(0.8)


def test_expected_wrong_in_top_counts_the_bad_rows():
    rng = np.random.default_rng(3)
    planted, rest, bad = mixture(rng, n=3000, pi=0.1, shift=3.0, planted=300)
    k = 100
    top = np.argsort(-rest)[:k]
    pi = contamination(planted, rest)
    assert expected_wrong_in_top(planted, rest, pi, k) == pytest.approx(bad[top].sum(), abs=20)


def test_selfcheck_picks_the_ranking_that_separates_and_gives_an_interval():
    rng = np.random.default_rng(1)
    planted_good, rest_good, _ = mixture(rng, shift=2.5)
    planted_bad, rest_bad, _ = mixture(rng, shift=0.3)
    out = run_selfcheck({"good": planted_good, "weak": planted_bad}, {"good": rest_good, "weak": rest_bad},
                        bootstrap=100, bias={})
    assert out["ranking"] == "good"
    assert out["expected_auroc_low"] <= out["expected_auroc"] <= out["expected_auroc_high"]
    assert out["expected_auroc_high"] - out["expected_auroc_low"] < 0.15
    assert out["candidates"]["weak"]["expected_auroc"] < 0.7 and not out["low"]


def test_mean_rank_orders_by_both_signals():
    s = pd.DataFrame({"multimem": [0.0, 1.0, 2.0, 3.0], "cmc_out": [3.0, 2.0, 1.0, 0.0]})
    r = mean_rank(s, s)
    assert np.all(np.diff(r) > 0)


def test_plan_plants_within_a_fold_and_respects_the_cost_cap():
    roles = np.array([f"fold{k % 4}" for k in range(1000)])
    plan = plan_planted(roles, ["image", "text"], SelfCheckConfig())
    assert len(plan) == 30
    assert (roles[plan.donors] == plan.roles).all() and (roles[plan.partners] == plan.roles).all()
    assert (plan.donors != plan.partners).all()
    assert (plan.sources["image"] == plan.donors).all() and (plan.sources["text"] == plan.partners).all()
    four = plan_planted(roles, ["image", "text", "audio", "video"], SelfCheckConfig())
    assert len(four) <= 80 and set(four.kinds) == {"image", "text", "audio", "video"}
    assert len(plan_planted(roles, ["image", "text"], SelfCheckConfig(enabled=False))) == 0


@pytest.mark.parametrize("rows, modalities, cfg, why", [
    (1000, ["image", "text"], SelfCheckConfig(enabled=False), "--no-selfcheck was given"),
    (0, ["image", "text"], SelfCheckConfig(), "the paper protocol plants none"),
    (120, ["image", "text", "audio"], SelfCheckConfig(), "120 rows are too few to plant 5 corruptions of each kind "
                                                         "within 8% more training (about 188 are needed"),
])
def test_an_empty_plan_says_why_and_the_verdict_repeats_it(rows, modalities, cfg, why):
    from multimem_core.summary import verdict

    plan = plan_planted(np.array([f"fold{k % 4}" for k in range(rows)]), modalities, cfg)
    assert len(plan) == 0 and plan.skipped.startswith(why)
    # the bound is the real one: at the rows it names, the plan is no longer empty
    if rows == 120:
        assert len(plan_planted(np.array([f"fold{k % 4}" for k in range(188)]), modalities, cfg)) > 0
    said = verdict({"modalities": modalities, "selfcheck": {"skipped": plan.skipped}})["verdict"]
    assert said.startswith(f"No self-check in this run: {why}")
    unfinished = verdict({"modalities": modalities, "status": "failed", "selfcheck": cfg.to_dict()})["verdict"]
    assert unfinished.startswith("No self-check in this run: the run has not finished (status: failed)")


@pytest.fixture(scope="module")
def crossfit_run(shapes_manifest, tmp_path_factory):
    """A tiny image+text crossfit run with default protocol options: no H, planted rows."""
    from conftest import tiny_score_config

    from multimem_core.score import score_run

    cfg = tiny_score_config(shapes_manifest, tmp_path_factory.mktemp("runs") / "crossfit", modalities=["image", "text"])
    return score_run(cfg)


def test_every_row_has_a_finite_score(crossfit_run):
    samples = pd.read_parquet(crossfit_run.path / "samples.parquet")
    scores = pd.read_parquet(crossfit_run.path / "scores.parquet")
    assert "H" not in set(samples["role"])
    assert len(scores) == len(samples) and set(scores["id"]) == set(samples["id"])
    cols = ["multimem", "cmc_in", "cmc_out", "pair__image__text", "contrib__image", "combo__meanrank"]
    assert np.isfinite(scores[cols].to_numpy(dtype=float)).all()


def test_planted_rows_stay_out_of_scores_and_exports(crossfit_run, tmp_path):
    from multimem_core.cli import main

    planted = pd.read_parquet(crossfit_run.path / "selfcheck.parquet")
    assert len(planted) >= 5 and planted["id"].str.startswith("planted-").all()
    assert np.isfinite(planted["multimem"]).all()
    scores = pd.read_parquet(crossfit_run.path / "scores.parquet")
    assert not set(planted["id"]) & set(scores["id"])
    cfg = json.loads((crossfit_run.path / "config.json").read_text())
    assert cfg["selfcheck"]["n_planted"] == len(planted)
    virtual = pd.read_parquet(crossfit_run.path / "selfcheck_virtual.parquet")
    assert len(virtual) > len(planted) and virtual["id"].str.startswith("virtual-").all()
    assert np.isfinite(virtual["cmc_out"]).all() and not set(virtual["id"]) & set(scores["id"])
    assert cfg["selfcheck"]["n_virtual"] == len(virtual) == cfg["selfcheck"]["candidates"]["-cmc_out"]["n_planted"]
    assert (virtual["donor"] != virtual["partner"]).all() and set(virtual["donor"]) <= set(scores["id"])
    out = tmp_path / "clean.csv"
    assert main(["export", str(crossfit_run.path), "--drop", "top:5", "--out", str(out)]) == 0
    exported = pd.read_csv(out)
    assert not exported["id"].astype(str).str.startswith(("planted-", "virtual-")).any()
    assert len(exported) == len(scores) - 5


def test_summary_json_has_the_verdict_keys(crossfit_run, capsys):
    from multimem_core.cli import main

    assert main(["summary", str(crossfit_run.path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    for key in ("ranking", "expected_auroc", "expected_auroc_low", "expected_auroc_high", "rows", "rows_scored"):
        assert key in s, key
    scores = pd.read_parquet(crossfit_run.path / "scores.parquet")
    assert s["ranking"].lstrip("-") in scores.columns
    assert s["rows"] == s["rows_scored"] == len(scores)
    assert s["expected_auroc_low"] <= s["expected_auroc"] <= s["expected_auroc_high"]


def test_overview_starts_with_the_verdict(crossfit_run, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from app import run_data

    monkeypatch.setenv(run_data.ENV_RUN, str(crossfit_run.path))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    verdicts = [m.value for m in at.markdown if "ranks above a right one" in m.value]
    assert verdicts and "a wrong caption" in verdicts[0]
    sc = json.loads((crossfit_run.path / "config.json").read_text())["selfcheck"]
    low = sc["expected_auroc"] < 0.70 or sc["expected_auroc_low"] < 0.70
    assert bool([w for w in at.warning if "poorly" in w.value]) is low


@pytest.mark.parametrize("est, lo, warned", [(0.69, 0.60, True), (0.75, 0.68, True), (0.75, 0.71, False),
                                             (0.699, 0.699, True)])
def test_the_verdict_warns_below_070_or_when_the_interval_reaches_under_it(est, lo, warned):
    from multimem_core.summary import verdict

    cfg = {"modalities": ["image", "text"], "selfcheck": {
        "ranking": "-cmc_out", "expected_auroc": est, "expected_auroc_low": lo, "expected_auroc_high": est + 0.05,
        "contamination": 0.1, "expected_wrong_in_top": 10, "kinds": ["text"]}}
    v = verdict(cfg)
    assert ("warning" in v) is warned
    if est < 0.70:
        assert f"estimate {est:.2f} < 0.70" in v["warning"]
    if warned:  # what to try fits the run: its text tower trains from scratch, its image tower does not
        scratch_text = verdict({**cfg, "model": {"image_tower": "efficientnet-lite2", "text_tower": "mm-tiny"}})
        assert "--text-tower minilm" in scratch_text["warning"] and "--image-tower" not in scratch_text["warning"]


def test_a_selfcheck_without_figures_reads_as_none_in_every_report(crossfit_run, tmp_path, capsys):
    """Strict JSON stores a NaN figure (fewer than two planted rows scored) as null: the verdict says there is no
    estimate and the text summary prints "-" for it, where both crashed on null (and printed "nan %" before)."""
    import shutil

    from multimem_core.cli import main
    from multimem_core.atomic import atomic_write_json

    run = tmp_path / "run"
    shutil.copytree(crossfit_run.path, run)
    cfg = json.loads((run / "config.json").read_text())
    nan = float("nan")
    other = next(c for c in cfg["selfcheck"]["candidates"] if c != cfg["selfcheck"]["ranking"])
    cfg["selfcheck"]["candidates"][other].update(expected_auroc=nan, auroc_planted=nan)
    atomic_write_json(run / "config.json", cfg)
    assert "NaN" not in (run / "config.json").read_text()
    assert main(["summary", str(run)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith(other + " "))
    assert line.split()[1] == "-" and "planted -)" in line
    cfg["selfcheck"].update(expected_auroc=nan, expected_auroc_low=nan, expected_auroc_high=nan)
    atomic_write_json(run / "config.json", cfg)
    assert main(["summary", str(run)]) == 0
    assert capsys.readouterr().out.startswith("No self-check in this run: its planted corruptions could not be scored")
    assert main(["summary", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["expected_auroc"] is None


def test_summary_without_injected_column_says_nothing_of_injections(crossfit_run, tmp_path, capsys):
    import shutil

    from multimem_core.cli import main

    run = tmp_path / "run"
    shutil.copytree(crossfit_run.path, run)
    samples = pd.read_parquet(run / "samples.parquet").drop(columns=["injected"], errors="ignore")
    samples.to_parquet(run / "samples.parquet")
    assert main(["summary", str(run)]) == 0
    text = capsys.readouterr().out.replace(str(run), "RUN")  # the test's folder name says "injected"
    assert text.startswith("On this data,")
    assert "injected" not in text and "clean" not in text


def test_mixture_share_recovers_the_share_of_bad_rows():
    for pi in (0.0, 0.1, 0.25):
        fits = []
        for seed in range(5):
            planted, rest, bad = mixture(np.random.default_rng(seed), pi=pi, planted=60)
            fits.append(float(mixture_share(planted, rest)[0]))
        assert abs(np.mean(fits) - pi) < 0.04, (pi, fits)


def test_contamination_stays_under_the_tail_bound_and_the_batch_agrees():
    rng = np.random.default_rng(5)
    planted, rest, _ = mixture(rng, pi=0.1, shift=0.5, planted=40)
    assert contamination(planted, rest) <= tail_bound(planted, rest) + 1e-12
    batch = mixture_share(np.stack([planted, planted[::-1]]), np.stack([rest, rest]))
    assert batch[0] == pytest.approx(batch[1]) == pytest.approx(mixture_share(planted, rest)[0])


def test_weak_separation_is_not_overstated():
    """Where clean and bad rows overlap, π is poorly identified: the estimate must not run far above the truth."""
    errors = []
    for seed in range(10):
        planted, rest, bad = mixture(np.random.default_rng(seed), n=900, pi=0.1, shift=0.8, planted=30)
        true = auroc(rest[bad], rest[~bad])
        errors.append(estimate(planted, rest, bootstrap=50)["expected_auroc"] - true)
    assert np.mean(errors) < 0.03, errors


def test_an_uncertain_correction_does_not_win_the_ranking():
    """Same scores, one candidate with a slightly larger bias but a much wider set-to-set spread: the run ranks
    by the one whose interval's lower end is higher."""
    rng = np.random.default_rng(2)
    planted, rest, _ = mixture(rng, shift=1.5)
    out = run_selfcheck({"steady": planted, "shaky": planted}, {"steady": rest, "shaky": rest}, bootstrap=50,
                        bias={"steady": 0.0, "shaky": 0.01}, spread={"steady": 0.01, "shaky": 0.08})
    shaky, steady = out["candidates"]["shaky"], out["candidates"]["steady"]
    assert shaky["expected_auroc"] > steady["expected_auroc"]
    assert shaky["expected_auroc_low"] < steady["expected_auroc_low"] and out["ranking"] == "steady"


def test_a_ranking_named_as_summary_names_it_works_as_a_cli_value(crossfit_run, tmp_path):
    """`--score -cmc_out`: argparse alone reads "-cmc_out" as an option; export ranks by the column cmc_out."""
    from multimem_core.cli import build_parser, join_dashed_values, main

    args = build_parser().parse_args(join_dashed_values(
        ["mitigate", str(crossfit_run.path), "--strategy", "remove", "--score", "-cmc_out"]))
    assert args.score == "-cmc_out"
    assert main(["export", str(crossfit_run.path), "--format", "ids", "--out", str(tmp_path / "ids.txt"),
                 "--drop", "top:3", "--score", "-cmc_out"]) == 0
    scores = crossfit_run.scores()
    lowest = scores.nsmallest(3, "cmc_out")["id"].astype(str).tolist()
    assert (tmp_path / "ids.txt").read_text().split()[:3] == lowest
