import numpy as np
import pytest

from multimem_core.config import ProtocolConfig
from multimem_core.protocol import assign


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_crossfit_scores_every_row_by_default(folds):
    a = assign(500, ProtocolConfig("crossfit", folds=folds, seed=3))
    assert not len(a.heldout) and len(a.scored) == 500
    for name, train in a.train_sets.items():
        ref = a.reference(name)
        # a model's reference set is exactly its own fold: the rows it never trained on
        assert set(ref) == set(np.flatnonzero(a.roles == name))
        assert not set(ref) & set(train) and len(ref) + len(train) == 500


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_crossfit_bookkeeping(folds):
    a = assign(500, ProtocolConfig("crossfit", folds=folds, seed=3, heldout_frac=0.1))
    h = set(a.heldout)
    assert h and all(a.roles[i] == "H" for i in h)
    assert all(h <= set(a.reference(name)) for name in a.train_sets)
    for name, train in a.train_sets.items():
        assert not h & set(train), f"{name} trains on held-out samples"
    scored = set(a.scored)
    assert scored | h == set(range(500)), "crossfit scores every training sample"
    for role, out_model in a.out_model.items():
        members = set(np.flatnonzero(a.roles == role))
        assert not members & set(a.train_sets[out_model]), f"the out-model of {role} trained on it"
        for m in a.in_models[role]:
            assert members <= set(a.train_sets[m]), f"in-model {m} did not train on all of {role}"
        assert len(a.in_models[role]) == folds - 1


def test_paper_bookkeeping():
    a = assign(400, ProtocolConfig("paper", seed=1))
    roles = a.roles
    f, g = set(a.train_sets["f"]), set(a.train_sets["g"])
    s_s, s_c, s_i = (set(np.flatnonzero(roles == r)) for r in ("S_S", "S_C", "S_I"))
    assert f == s_s | s_c and g == s_s | s_i
    assert not set(a.heldout) & (f | g)
    assert set(a.reference("f")) == set(a.reference("g")) == set(a.heldout) != set()
    assert a.out_model["S_C"] == "g" and a.in_models["S_C"] == ["f"]
    assert a.out_model["S_I"] == "f" and a.in_models["S_I"] == ["g"]


def test_deterministic_and_validated():
    a, b = assign(100, ProtocolConfig(seed=5)), assign(100, ProtocolConfig(seed=5))
    assert (a.roles == b.roles).all()
    with pytest.raises(ValueError, match="--folds 1: must be at least 2"):
        ProtocolConfig("crossfit", folds=1)
    with pytest.raises(ValueError, match="paper protocol needs"):
        ProtocolConfig("paper", heldout_frac=0.0)
    with pytest.raises(ValueError, match="too few"):
        assign(5, ProtocolConfig())


def test_reference_sample_is_bounded_and_seeded():
    """The all-against-all figures use at most REFERENCE_SAMPLE reference rows: a seeded sample, in order."""
    from multimem_core.protocol import sampled_reference

    small = np.arange(0, 300, 3)
    assert sampled_reference(small, cap=100) is small
    big = np.arange(0, 3000, 3)
    a = sampled_reference(big, cap=100)
    assert len(a) == 100 and np.all(np.diff(a) > 0) and np.isin(a, big).all()
    assert np.array_equal(a, sampled_reference(big, cap=100))


def test_small_crossfit_is_repeated_on_new_splits():
    from multimem_core.config import MAX_REPEATS

    cfg = ProtocolConfig("crossfit", folds=4, seed=2, heldout_frac=0.1)
    small, large = assign(120, cfg), assign(2000, cfg)
    assert not large.repeats and large.all_train_sets.keys() == large.train_sets.keys()
    assert 1 < len(small.splits) <= MAX_REPEATS
    h = set(small.heldout)
    names = [name for split in small.splits for name in split.train_sets]
    assert len(set(names)) == len(names) == 4 * len(small.splits) and list(small.all_train_sets) == names
    for split in small.repeats:
        assert set(split.heldout) == h, "every split keeps the same H"
        assert not (split.roles == small.roles).all(), "a repeat deals the rows into other folds"
        for role, out in split.out_model.items():
            members = set(np.flatnonzero(split.roles == role))
            assert not members & set(split.train_sets[out]) and out == role
            assert all(members <= set(split.train_sets[m]) for m in split.in_models[role])
            # a repeat's model is found by name from the first split, with the rows it never saw
            assert set(small.reference(out)) == members | h
    # split r trains with seed + r: its errors independent of the other splits'
    models = ["fold2"] + [f"r{r}-fold2" for r in range(1, len(small.splits))]
    assert [small.seed_of(name, 7) for name in models] == [7 + r for r in range(len(small.splits))]
    assert len(assign(120, ProtocolConfig("crossfit", repeats=1)).splits) == 1
    assert len(assign(120, ProtocolConfig("paper")).splits) == 1
    with pytest.raises(ValueError, match="repeats"):
        ProtocolConfig("paper", repeats=2)
