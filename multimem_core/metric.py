"""CMC and MultiMem (DESIGN §2): pure functions, tensors in, scores out, no I/O.

For sample i with n modalities, Φ_i ∈ R^{n×d} stacks its L2-normalised embeddings:

    CMC(i, H) = ½ E_aug[1ᵀ Φ_i Φ_iᵀ 1] / n²  −  ½ E_{h∈H}[1ᵀ Φ_i Φ_hᵀ 1] / n²
    MultiMem(i) = CMC_f(i, H) − CMC_g(i, H)

Everything reduces to two n×n matrices per sample, computed once:

    gram[i]  = E_aug[Φ_i Φ_iᵀ]            (how each pair of its modalities agrees)
    cross[i] = E_aug[Φ_i] (E_h Φ_h)ᵀ       (how each pair agrees with unrelated samples)

so that CMC restricted to any subset S of modalities (a pair for the pairwise score, all but m for the
per-modality contribution) is a masked sum: (Σ_S gram − Σ_S cross) / (2 |S|²). No loop over pairs of
samples, and the terms are linear, so averaging CMC over several models equals averaging their terms.

Shapes: `views` is [A, N, n, d] (A augmented views) or [N, n, d] (one view).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor


def _as_views(x: Tensor) -> Tensor:
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected embeddings of shape [A, N, n, d] or [N, n, d], got {tuple(x.shape)}")
    return x


@dataclass(frozen=True)
class CMCTerms:
    """The two n×n matrices per sample that every CMC variant is computed from."""

    gram: Tensor   # [N, n, n]  E_aug[Φ_i Φ_iᵀ]
    cross: Tensor  # [N, n, n]  E_aug[Φ_i] · mean_h(Φ_h)ᵀ

    def __add__(self, other: "CMCTerms") -> "CMCTerms":
        return CMCTerms(self.gram + other.gram, self.cross + other.cross)

    def __truediv__(self, k: float) -> "CMCTerms":
        return CMCTerms(self.gram / k, self.cross / k)


def cmc_terms(views: Tensor, heldout_views: Tensor) -> CMCTerms:
    """gram and cross for every sample of `views` against the held-out set, under one model.

    views: [A, N, n, d] or [N, n, d]; heldout_views: [A', M, n, d] or [M, n, d] (views are averaged).
    """
    views = _as_views(views).float()
    heldout = _as_views(heldout_views).float()
    if views.shape[-2:] != heldout.shape[-2:]:
        raise ValueError(f"sample embeddings {tuple(views.shape[-2:])} and held-out embeddings "
                         f"{tuple(heldout.shape[-2:])} differ in modalities or dimension")
    return terms_against(views, heldout.mean(dim=(0, 1)))     # [n, d]: E_h Φ_h


def terms_against(views: Tensor, reference: Tensor) -> CMCTerms:
    """gram and cross of the samples whose views are `views` ([A, N, n, d]) against the mean of their unrelated
    set: `reference` [n, d], one for all, or [N, n, d], one per sample (a member of the reference set is
    compared with the rest of it)."""
    views = _as_views(views)
    gram = torch.einsum("vimd,vind->imn", views, views) / views.shape[0]
    return CMCTerms(gram, cross_against(views.mean(0), reference))


def cross_against(view_means: Tensor, reference: Tensor) -> Tensor:
    """[N, n, n] E_aug[Φ_i] · (mean of the unrelated set)ᵀ; `reference` [n, d] or [N, n, d] (see terms_against)."""
    return torch.einsum("imd,nd->imn" if reference.dim() == 2 else "imd,ind->imn", view_means, reference)


@dataclass(frozen=True)
class HeldoutViews:
    """What the H pass keeps of each H sample under one model: its view mean (all the second term needs)."""

    own: Tensor    # [M, n, d]  E_aug[Φ_h] of each H sample

    @property
    def mean(self) -> Tensor:
        """[n, d] E_h E_aug[Φ_h]: the second term's unrelated set."""
        return self.own.sum(0) / len(self.own)


def heldout_pass(embed_views: Callable[[np.ndarray, int], Tensor], heldout: np.ndarray, *, chunk: int,
                 on_chunk: Callable[[np.ndarray, Tensor, bool], None] | None = None) -> HeldoutViews:
    """Embed H in chunks (key -1 - s for the chunk at s) and keep each sample's view mean."""
    own = None
    for s in range(0, len(heldout), chunk):
        v = embed_views(heldout[s:s + chunk], -1 - s)
        if own is None:
            own = torch.zeros(len(heldout), *v.shape[-2:])
        own[s:s + chunk] = v.mean(0)
        if on_chunk is not None:
            on_chunk(heldout[s:s + chunk], v, True)
    if own is None:
        raise ValueError("no held-out samples: the CMC's second term needs H")
    return HeldoutViews(own)


def streamed_cmc_terms(embed_views: Callable[[np.ndarray, int], Tensor], *, n: int, heldout: np.ndarray,
                       chunk: int, on_chunk: Callable[[np.ndarray, Tensor, bool], None] | None = None) -> CMCTerms:
    """gram and cross of all n samples under one model, embedded chunk by chunk (memory: one chunk).

    embed_views(idx, key) returns the views of the samples at `idx`, [A, B, n_mod, d], L2-normalised;
    `key` (-1 - s for the H pass, s for the pass over every sample) lets the caller seed the views of a
    chunk so that they do not depend on the chunk order. H is embedded first (heldout_pass): its mean over
    views and samples is all the second term needs. The held-out rule: an H sample's unrelated set is the
    rest of H (its own H-pass views left out of the mean), not H with itself in it; with one H sample the
    full mean stands. (A run saved with --save-views keeps both passes' views of H, so that re-importing
    them reproduces H rows too.)
    on_chunk(idx, views, heldout_pass) sees every chunk's views (to save them, to report progress).
    """
    is_heldout = np.zeros(n, dtype=bool)
    is_heldout[heldout] = True
    h_pos = np.full(n, -1)
    h_pos[heldout] = np.arange(len(heldout))
    h = heldout_pass(embed_views, heldout, chunk=chunk, on_chunk=on_chunk)
    h_sum = h.own.sum(0)
    h_mean = h_sum / len(heldout)

    gram = cross = None
    for s in range(0, n, chunk):
        idx = np.arange(s, min(n, s + chunk))
        v = embed_views(idx, s)
        if gram is None:
            gram = torch.zeros(n, v.shape[-2], v.shape[-2])
            cross = torch.zeros(n, v.shape[-2], v.shape[-2])
        t = terms_against(v, h_mean)
        gram[idx], cross[idx] = t.gram, t.cross
        own = is_heldout[idx]
        if own.any() and len(heldout) > 1:
            h_rest = (h_sum - h.own[h_pos[idx[own]]]) / (len(heldout) - 1)
            cross[idx[own]] = cross_against(v.mean(0)[own], h_rest)
        if on_chunk is not None:
            on_chunk(idx, v, False)
    return CMCTerms(gram, cross)


def cmc_from_terms(terms: CMCTerms, *, subset: Sequence[int] | None = None) -> Tensor:
    """CMC of every sample, over all modalities or only those at the indices in `subset`."""
    n = terms.gram.shape[-1]
    idx = torch.arange(n) if subset is None else torch.as_tensor(list(subset), dtype=torch.long)
    if idx.numel() == 0:
        raise ValueError("subset must name at least one modality")
    g = terms.gram[:, idx][:, :, idx].sum(dim=(1, 2))
    c = terms.cross[:, idx][:, :, idx].sum(dim=(1, 2))
    k2 = float(idx.numel()) ** 2
    return 0.5 * g / k2 - 0.5 * c / k2


def cmc(views: Tensor, heldout_views: Tensor, *, subset: Sequence[int] | None = None) -> Tensor:
    """Cross-modal consistency of each sample under one model (DESIGN §2)."""
    return cmc_from_terms(cmc_terms(views, heldout_views), subset=subset)


def pair_name(a: str, b: str) -> str:
    return f"pair__{a}__{b}"


def contrib_name(m: str) -> str:
    return f"contrib__{m}"


def scores_from_terms(terms_in: CMCTerms, terms_out: CMCTerms, *, modalities: Sequence[str]) -> dict[str, Tensor]:
    """MultiMem and its variants from the terms of the model(s) that saw each sample and the one that did not.

    Returns columns: multimem, cmc_in, cmc_out, pair__<a>__<b> for every pair, contrib__<m> for every
    modality (the drop in MultiMem when m is left out; defined when n ≥ 3, else the pair score for n = 2
    has nothing to drop to and the contribution is MultiMem itself split evenly).
    """
    n = len(modalities)
    if terms_in.gram.shape[-1] != n:
        raise ValueError(f"{n} modality names for terms over {terms_in.gram.shape[-1]} modalities")
    cmc_in = cmc_from_terms(terms_in)
    cmc_out = cmc_from_terms(terms_out)
    out = {"multimem": cmc_in - cmc_out, "cmc_in": cmc_in, "cmc_out": cmc_out}
    for a, b in combinations(range(n), 2):
        out[pair_name(modalities[a], modalities[b])] = (
            cmc_from_terms(terms_in, subset=(a, b)) - cmc_from_terms(terms_out, subset=(a, b)))
    for m in range(n):
        rest = [k for k in range(n) if k != m]
        if len(rest) >= 2:
            without = cmc_from_terms(terms_in, subset=rest) - cmc_from_terms(terms_out, subset=rest)
            out[contrib_name(modalities[m])] = out["multimem"] - without
        else:
            out[contrib_name(modalities[m])] = out["multimem"] / n
    return out


def _is_array(x) -> bool:
    return isinstance(x, (Tensor, np.ndarray))


def _tensor(x, *, normalize: bool) -> Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x.float()
    return torch.nn.functional.normalize(t, dim=-1) if normalize else t


def multimem_scores(
    in_views: Tensor | np.ndarray | Sequence[Tensor | np.ndarray],
    out_views: Tensor | np.ndarray,
    heldout: tuple[Tensor | np.ndarray | Sequence[Tensor | np.ndarray], Tensor | np.ndarray],
    *,
    modalities: Sequence[str],
    normalize: bool = False,
) -> dict[str, Tensor] | dict[str, np.ndarray]:
    """MultiMem of N samples from their embeddings (in the style of cleanlab's array functions).

    in_views:  [A, N, n, d] embeddings under the model f that trained on the samples, or a list of such
               arrays, one per model that saw them (crossfit: CMC_in is the mean over those models).
               [N, n, d] is one view per sample.
    out_views: [A, N, n, d] under the model g that did not.
    heldout:   (heldout_in, heldout_out): the held-out set H embedded by the same model(s) as in_views
               (a list in the same order when in_views is a list) and by g.
    normalize: L2-normalise every embedding first (the metric assumes unit vectors; embeddings computed
               elsewhere often are not).

    Torch tensors in, tensors out; numpy arrays in, float64 numpy arrays out. Keys: multimem, cmc_in, cmc_out,
    pair__<a>__<b>, contrib__<m> (see `scores_from_terms`). `multimem_core.importing` builds a whole run
    directory from files on top of the same functions.
    """
    as_numpy = not isinstance(out_views, Tensor)
    in_list = [in_views] if _is_array(in_views) else list(in_views)
    h_in, h_out = heldout
    h_in_list = [h_in] if _is_array(h_in) else list(h_in)
    if len(in_list) != len(h_in_list):
        raise ValueError(f"{len(in_list)} in-models but held-out embeddings for {len(h_in_list)}")
    in_list = [_tensor(v, normalize=normalize) for v in in_list]
    h_in_list = [_tensor(h, normalize=normalize) for h in h_in_list]
    terms_in = cmc_terms(in_list[0], h_in_list[0])
    for v, h in zip(in_list[1:], h_in_list[1:]):
        terms_in = terms_in + cmc_terms(v, h)
    terms_in = terms_in / len(in_list)
    terms_out = cmc_terms(_tensor(out_views, normalize=normalize), _tensor(h_out, normalize=normalize))
    out = scores_from_terms(terms_in, terms_out, modalities=modalities)
    return {k: v.numpy().astype(np.float64) for k, v in out.items()} if as_numpy else out


def mean_pair_cosine(gram: Tensor) -> Tensor:
    """Mean cosine over the modality pairs of each sample (off-diagonal mean of its gram): the cosine baseline."""
    n = gram.shape[-1]
    if n < 2:
        raise ValueError("need at least two modalities")
    off = gram.sum(dim=(1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).sum(-1)
    return off / (n * (n - 1))


def contrastive_loss_per_sample(emb: Tensor, reference: Tensor, *, logit_scale: float, chunk: int = 4096) -> Tensor:
    """Per-sample symmetric InfoNCE over modality pairs, negatives from `reference` (the loss baseline).

    emb: [N, n, d] clean-view embeddings of the samples; reference: [M, n, d] unrelated samples (H).
    For each pair (a, b): the sample's own a–b match competes with a against every reference b, and the
    other way round. Returns the mean over pairs and both directions, [N]. Rows go `chunk` at a time, so
    memory is chunk × M whatever N.
    """
    if len(emb) > chunk:
        return torch.cat([contrastive_loss_per_sample(emb[s:s + chunk], reference, logit_scale=logit_scale,
                                                      chunk=chunk) for s in range(0, len(emb), chunk)])
    n = emb.shape[1]
    losses = []
    for a, b in combinations(range(n), 2):  # n ≤ 4: at most 6 pairs, each a batched matrix product
        for x, y in ((a, b), (b, a)):
            pos = (emb[:, x] * emb[:, y]).sum(-1, keepdim=True)          # [N, 1]
            neg = emb[:, x] @ reference[:, y].T                          # [N, M]
            logits = logit_scale * torch.cat([pos, neg], dim=1)
            losses.append(torch.logsumexp(logits, dim=1) - logits[:, 0])
    return torch.stack(losses).mean(0)
