"""Virtual swaps: wrong pairs formed at scoring time from the rows a model never trained on."""

import numpy as np
import torch

from multimem_core.config import SelfCheckConfig
from multimem_core.metric import cmc, streamed_cmc_terms
from multimem_core.planting import plan_virtual
from multimem_core.selfcheck import auroc, estimate
from multimem_core.virtual import SourceViews, virtual_cmc

MODS = ["image", "text"]


def toy_views(n=120, d=16, views=3, agree=0.9, seed=0):
    """[A, n, 2, d] unit views: each row's text is its image plus noise (cosine ≈ agree), fresh noise per view."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    out = []
    for _ in range(views):
        img = torch.nn.functional.normalize(base + 0.1 * torch.randn(n, d, generator=g), dim=-1)
        txt = torch.nn.functional.normalize(agree * base + (1 - agree) * torch.randn(n, d, generator=g), dim=-1)
        out.append(torch.stack([img, txt], 1))
    return torch.stack(out)


def streamed(all_views, fold, src):
    """The metric's streamed pass over every row (the fold as reference set), `src` watching every chunk."""
    def embed(idx, key):
        return all_views[:, idx]

    return streamed_cmc_terms(embed, n=all_views.shape[1], heldout=fold, chunk=32,
                              on_chunk=lambda idx, v, ref: src(idx, v, ref))


def test_plan_virtual_pairs_distinct_rows_of_one_fold_and_is_seeded():
    roles = np.array([f"fold{k % 4}" for k in range(1000)])
    cfg = SelfCheckConfig()
    plan = plan_virtual(roles, MODS, cfg)
    assert len(plan) == cfg.virtual and set(plan.kinds) == {"text"}
    assert (roles[plan.donors] == plan.roles).all() and (roles[plan.partners] == plan.roles).all()
    assert (plan.donors != plan.partners).all()
    assert (plan.sources["image"] == plan.donors).all() and (plan.sources["text"] == plan.partners).all()
    again = plan_virtual(roles, MODS, cfg)
    assert (again.donors == plan.donors).all() and (again.partners == plan.partners).all()
    small = plan_virtual(roles[:40], MODS, cfg)  # never more virtual rows than rows
    assert len(small) == 40
    assert len(plan_virtual(roles, MODS, SelfCheckConfig(enabled=False))) == 0


def test_virtual_cmc_is_the_metric_on_the_assembled_row_with_its_sources_left_out():
    v = toy_views()
    n = v.shape[1]
    roles = np.array(["fold0"] * (n // 2) + ["fold1"] * (n - n // 2))
    fold = np.flatnonzero(roles == "fold0")
    plan = plan_virtual(roles, MODS, SelfCheckConfig(virtual=30))
    plan_f0 = np.flatnonzero(plan.roles == "fold0")
    src = SourceViews.of(plan, "fold0")
    streamed(v, fold, src)
    got = virtual_cmc(plan, MODS, {"fold0": src})
    assert np.isfinite(got[plan_f0]).all() and np.isnan(np.delete(got, plan_f0)).all()
    for p in plan_f0:
        a, b = plan.donors[p], plan.partners[p]
        row = torch.stack([v[:, a, 0], v[:, b, 1]], 1)[:, None]          # image of a, text of b
        rest = fold[(fold != a) & (fold != b)]
        assert float(cmc(row, v[:, rest])[0]) == np.float32(got[p]).item() or \
            abs(float(cmc(row, v[:, rest])[0]) - got[p]) < 1e-6


def test_virtual_swaps_of_a_separable_toy_rank_far_below_the_real_rows():
    v = toy_views(n=200, agree=0.95)
    roles = np.array(["fold0"] * 200)
    fold = np.arange(200)
    plan = plan_virtual(roles, MODS, SelfCheckConfig(virtual=150))
    src = SourceViews.of(plan, "fold0")
    terms = streamed(v, fold, src)
    from multimem_core.metric import cmc_from_terms

    real = cmc_from_terms(terms).numpy()
    virtual = virtual_cmc(plan, MODS, {"fold0": src})
    assert len(virtual) == 150
    assert auroc(-virtual, -real) > 0.98  # lower consistency = more suspicious


def test_estimate_interval_covers_the_truth_on_synthetic_mixtures():
    """Hundreds of planted rows drawn like the natural bad ones, 10 % of the rest bad: the 90 % interval holds
    the true AUROC (that of the draw's own bad rows) in most draws, and the estimate is off by little."""
    covered, errors = 0, []
    for seed in range(12):
        r = np.random.default_rng(seed)
        n, pi, shift = 800, 0.1, 1.2
        bad = r.random(n) < pi
        rest = np.where(bad, r.normal(shift, 1, n), r.normal(0, 1, n))
        planted = r.normal(shift, 1, 400)
        true = auroc(rest[bad], rest[~bad])
        e = estimate(planted, rest, bootstrap=100, seed=seed)
        covered += e["expected_auroc_low"] <= true <= e["expected_auroc_high"]
        errors.append(e["expected_auroc"] - true)
    assert covered >= 9, covered
    assert np.abs(errors).mean() < 0.04 and np.abs(errors).max() < 0.1


def test_a_candidate_of_few_planted_rows_replaces_the_virtual_one_only_when_paired_rows_say_it_is_better():
    """-cmc_out measured on 400 virtual swaps is the default ranking; a candidate measured on 30 trained planted
    rows takes its place only where it ranks those same rows above the real ones clearly more often."""
    from multimem_core.selfcheck import paired_gain, run_selfcheck

    r = np.random.default_rng(5)
    n = 800
    bad = r.random(n) < 0.1
    base = np.where(bad, r.normal(1.2, 1, n), r.normal(0, 1, n))   # -cmc_out of the real rows
    planted = r.normal(1.8, 1, 30)        # 30 trained planted rows that happen to be easy ones: estimates err high
    virtual = r.normal(1.2, 1, 400)
    noisy = {"-cmc_out": base + r.normal(0, 0.1, n), "combo__meanrank": base + r.normal(0, 0.1, n)}
    noisy_planted = {"-cmc_out": planted + r.normal(0, 0.1, 30), "combo__meanrank": planted + r.normal(0, 0.1, 30)}
    given = {"-cmc_out": virtual, "combo__meanrank": noisy_planted["combo__meanrank"]}
    assert run_selfcheck(given, noisy, bootstrap=100)["candidates"]["combo__meanrank"]["expected_auroc_low"] > \
        run_selfcheck(given, noisy, bootstrap=100)["candidates"]["-cmc_out"]["expected_auroc_low"]
    out = run_selfcheck(given, noisy, bootstrap=100, paired=noisy_planted)
    assert out["ranking"] == "-cmc_out"
    # clearly better on the same rows: a ranking that puts them far above the real rows, where -cmc_out barely does
    sharp = {"-cmc_out": noisy["-cmc_out"], "combo__meanrank": r.normal(0, 1, n)}
    sharp_planted = {"-cmc_out": r.normal(0.3, 1, 30), "combo__meanrank": r.normal(3.0, 1, 30)}
    assert paired_gain(sharp_planted["combo__meanrank"], sharp["combo__meanrank"], sharp_planted["-cmc_out"],
                       sharp["-cmc_out"]) > 0.01
    out = run_selfcheck({"-cmc_out": virtual, "combo__meanrank": sharp_planted["combo__meanrank"]}, sharp,
                        bootstrap=100, paired=sharp_planted)
    assert out["ranking"] == "combo__meanrank"
