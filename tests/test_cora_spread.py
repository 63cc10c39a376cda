"""benchmarks/cora_spread.py: public-like draws, the seed / interaction decomposition, and the
probe's choice of C."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def spread():
    # cora_spread imports its sibling benchmarks/cora.py, as when run as a script.
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "benchmarks"))
        yield load_benchmark("cora_spread")


def test_public_like_draws_have_planetoid_sizes(spread):
    codes = np.repeat(np.arange(7), [351, 217, 418, 818, 426, 298, 180])  # Cora's class sizes
    train, val, test = spread.public_like_split(codes, 3)
    assert np.array_equal(np.bincount(codes[train], minlength=7), np.full(7, 20))
    assert (len(val), len(test)) == (500, 1000)
    everything = np.concatenate([train, val, test])
    assert len(np.unique(everything)) == len(everything)  # disjoint
    again = spread.public_like_split(codes, 3)
    other = spread.public_like_split(codes, 4)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, val, test), strict=True))
    assert not np.array_equal(other[0], train)


def test_decomposition_of_an_additive_table_has_no_interaction(spread):
    """a[s, p] = m + u_s + v_p exactly: the interaction is 0 and the seed sd is sd(u)."""
    rng = np.random.default_rng(0)
    u, v = rng.normal(0, 2, 5), rng.normal(0, 3, 30)
    parts = spread.decomposition(80 + u[:, None] + v[None, :])
    assert parts["seed x draw sd (interaction)"] == pytest.approx(0, abs=1e-9)
    assert parts["seed sd (model)"] == pytest.approx(u.std(ddof=1))
    assert parts["seed sd on one draw, mean over draws"] == pytest.approx(u.std(ddof=1))


def test_decomposition_of_pure_interaction_finds_no_seed_effect(spread):
    """Seeds equal on average, each luckier on some draws: the spread is the interaction's."""
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1.0, (200, 400))
    parts = spread.decomposition(80 + rng.normal(0, 3, 400)[None, :] + noise)
    assert parts["seed x draw sd (interaction)"] == pytest.approx(1.0, abs=0.01)
    assert parts["seed sd (model)"] < 0.05


def test_chosen_takes_the_best_validation_C_and_the_smallest_on_ties(spread):
    scores = np.array([[[0.7, 0.8, 0.8, 0.6], [0.1, 0.2, 0.3, 0.4]]])  # [1, 2 (val, test), C]
    assert spread.chosen(scores)[0] == 0.2
