"""The vectorised metric against a naive loop written straight from DESIGN §2."""

from itertools import combinations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multimem_core.metric import (cmc, cmc_terms, contrastive_loss_per_sample, mean_pair_cosine, multimem_scores)


def random_views(a, n_samples, n_mod, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(a, n_samples, n_mod, d, generator=g), dim=-1)


def naive_cmc(views, heldout_views, subset=None):
    """CMC(i,H) = ½ E_aug[1ᵀΦΦᵀ1]/n² − ½ E_h[1ᵀΦ_iΦ_hᵀ1]/n², looping over everything."""
    a, n, m, _ = views.shape
    mods = list(range(m)) if subset is None else list(subset)
    k = len(mods)
    out = []
    for i in range(n):
        first = 0.0
        for v in range(a):
            phi = views[v, i, mods]
            first += sum(float(phi[p] @ phi[q]) for p in range(k) for q in range(k))  # 1ᵀΦΦᵀ1: every pair of rows
        first /= a
        second, count = 0.0, 0
        phi_i = views[:, i, mods].mean(0)
        for va in range(heldout_views.shape[0]):
            for h in range(heldout_views.shape[1]):
                phi_h = heldout_views[va, h, mods]
                second += sum(float(phi_i[p] @ phi_h[q]) for p in range(k) for q in range(k))
                count += 1
        second /= count
        out.append(0.5 * first / k**2 - 0.5 * second / k**2)
    return torch.tensor(out)


@pytest.mark.parametrize("n_mod", [2, 3, 4])
def test_cmc_matches_naive_loop(n_mod):
    views = random_views(3, 7, n_mod, 5, seed=n_mod)
    heldout = random_views(2, 6, n_mod, 5, seed=100 + n_mod)
    torch.testing.assert_close(cmc(views, heldout), naive_cmc(views, heldout), atol=1e-5, rtol=1e-5)
    for subset in combinations(range(n_mod), 2):
        torch.testing.assert_close(cmc(views, heldout, subset=subset), naive_cmc(views, heldout, subset),
                                   atol=1e-5, rtol=1e-5)


def test_cmc_of_identical_modalities_is_half_minus_heldout_term():
    # All modalities equal and H orthogonal: first term ½·n²/n² = ½, second 0.
    e = F.normalize(torch.randn(4, 8), dim=-1)
    views = e[:, None, :].expand(4, 3, 8).unsqueeze(0).clone()
    heldout = torch.zeros(1, 5, 3, 8)
    torch.testing.assert_close(cmc(views, heldout), torch.full((4,), 0.5))


def test_multimem_columns_and_values():
    mods = ["image", "text", "audio"]
    vin, vout = random_views(4, 9, 3, 6, 1), random_views(4, 9, 3, 6, 2)
    hin, hout = random_views(1, 5, 3, 6, 3), random_views(1, 5, 3, 6, 4)
    cols = multimem_scores(vin, vout, (hin, hout), modalities=mods)
    expected = naive_cmc(vin, hin) - naive_cmc(vout, hout)
    torch.testing.assert_close(cols["multimem"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cols["pair__image__audio"],
                               naive_cmc(vin, hin, (0, 2)) - naive_cmc(vout, hout, (0, 2)), atol=1e-5, rtol=1e-5)
    # contribution of text = MultiMem − MultiMem without text
    without_text = naive_cmc(vin, hin, (0, 2)) - naive_cmc(vout, hout, (0, 2))
    torch.testing.assert_close(cols["contrib__text"], expected - without_text, atol=1e-5, rtol=1e-5)
    assert set(cols) >= {"cmc_in", "cmc_out", "pair__image__text", "pair__text__audio", "contrib__audio"}


def test_crossfit_in_term_is_mean_over_models():
    mods = ["image", "text"]
    v1, v2, vout = (random_views(2, 5, 2, 4, s) for s in (1, 2, 3))
    h1, h2, hout = (random_views(1, 4, 2, 4, s) for s in (4, 5, 6))
    cols = multimem_scores([v1, v2], vout, ([h1, h2], hout), modalities=mods)
    expected_in = (naive_cmc(v1, h1) + naive_cmc(v2, h2)) / 2
    torch.testing.assert_close(cols["cmc_in"], expected_in, atol=1e-5, rtol=1e-5)


def test_baselines():
    views = random_views(1, 6, 3, 4, 7)
    gram = cmc_terms(views, views).gram
    cos = mean_pair_cosine(gram)
    e = views[0]
    naive = torch.tensor([np.mean([float(e[i, a] @ e[i, b]) for a, b in combinations(range(3), 2)]) for i in range(6)], dtype=torch.float32)
    torch.testing.assert_close(cos, naive, atol=1e-6, rtol=1e-6)
    # A sample whose modalities agree has a lower contrastive loss than one whose modalities are random.
    ref = random_views(1, 20, 3, 4, 8)[0]
    aligned = F.normalize(torch.randn(1, 4), dim=-1).expand(3, 4).unsqueeze(0)
    loss = contrastive_loss_per_sample(torch.cat([aligned, e[:1]]), ref, logit_scale=10.0)
    assert loss[0] < loss[1]


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="differ in modalities"):
        cmc(random_views(1, 3, 2, 4, 0), random_views(1, 3, 3, 4, 0))


def test_loss_baseline_in_chunks_equals_all_at_once():
    from multimem_core.metric import contrastive_loss_per_sample

    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(23, 3, 8, generator=gen), dim=-1)
    ref = torch.nn.functional.normalize(torch.randn(17, 3, 8, generator=gen), dim=-1)
    whole = contrastive_loss_per_sample(emb, ref, logit_scale=10.0)
    torch.testing.assert_close(contrastive_loss_per_sample(emb, ref, logit_scale=10.0, chunk=5), whole)


def test_repeated_crossfit_scores_are_the_mean_of_each_splits_scores():
    """A row's terms averaged over the splits give the mean of the splits' own scores (the loss baseline
    too): what a repeated crossfit run writes is exactly the average of R ordinary runs."""
    from dataclasses import replace

    from multimem_core.config import ProtocolConfig
    from multimem_core.metric import terms_against
    from multimem_core.protocol import assign
    from multimem_core.score_table import score_table

    mods, n, d = ["image", "text", "audio"], 60, 8
    a = assign(n, ProtocolConfig("crossfit", folds=3, repeats=3, heldout_frac=0.1, seed=1))
    gen = torch.Generator().manual_seed(0)
    terms, clean = {}, {}
    for name, _ in a.all_train_sets.items():
        views = torch.nn.functional.normalize(torch.randn(2, n, len(mods), d, generator=gen), dim=-1)
        terms[name] = terms_against(views, views.mean((0, 1)))
        clean[name] = {m: views[0, :, j].numpy() for j, m in enumerate(mods)}
    scales = {name: 10.0 for name in terms}
    ids = [f"s{i}" for i in range(n)]
    table, sim_in, _ = score_table(ids, a, terms, clean, mods, logit_scales=scales)
    each = [score_table(ids, replace(split, repeats=()), terms, clean, mods, logit_scales=scales)[0]
            for split in a.splits]
    assert len(each) == 3 and not np.allclose(each[0]["multimem"], each[1]["multimem"])
    for col in ("multimem", "cmc_in", "cmc_out", "pair__text__audio", "contrib__audio", "base__loss"):
        np.testing.assert_allclose(table[col], np.mean([t[col] for t in each], axis=0), rtol=1e-5, atol=1e-6)
    assert (table["role"].to_numpy() == a.roles[a.scored]).all() and sim_in.shape == (len(a.scored), 3, 3)
