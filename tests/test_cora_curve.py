"""benchmarks/cora_curve.py: the epoch rules its report compares."""

from __future__ import annotations

import pytest
from conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def curve():
    # cora_curve imports its sibling benchmarks/cora.py, as when run as a script.
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "benchmarks"))
        yield load_benchmark("cora_curve")


def line(epoch, val, test, public_val, public):
    """A curve.jsonl line with two random splits."""
    return {
        "epoch": epoch,
        "random": sum(test) / 2,
        "random_val": sum(val) / 2,
        "random_val_per_seed": val,
        "random_per_seed": test,
        "public": public,
        "public_val": public_val,
    }


def test_each_rule_takes_the_epoch_its_validation_nodes_choose(curve):
    lines = [
        line(10, [0.75, 0.875], [0.70, 0.60], 0.70, 0.71),
        line(20, [0.875, 0.75], [0.80, 0.50], 0.70, 0.72),
        line(30, [0.8125, 0.8125], [0.90, 0.90], 0.75, 0.73),
        line(40, [0.99, 0.99], [0.10, 0.10], 0.99, 0.10),  # past the last epoch: never seen
    ]
    rules = curve.choices(lines, last=30)
    assert rules["epoch 30"] == (0.90, 0.73)
    # Mean validation 0.8125 at epochs 10, 20 and 30 alike: the earliest, epoch 10, wins.
    assert rules["epoch by mean random-split validation"] == (pytest.approx(0.65), 0.71)
    # Split 0 picks epoch 20 (0.875), split 1 epoch 10 (0.875); the public split epoch 30.
    assert rules["epoch by each split's validation"] == (pytest.approx(0.70), 0.73)


def test_best_of_keeps_the_seed_best_on_validation_in_every_subset(curve):
    runs = [
        {
            "experiment": "x",
            "epoch": 100,
            "random_val": v,
            "public_val": 0.5,
            "random": t,
            "public": t,
        }
        for v, t in ((0.9, 0.75), (0.8, 0.875), (0.7, 0.5))
    ]
    # Subsets {0, 1} and {0, 2} keep seed 0 (0.75), {1, 2} keeps seed 1 (0.875).
    row = curve.best_of(runs, 100, 2).splitlines()[-1]
    assert row == "| x | 3 | 79.17 / 75.0 | 79.17 / 75.0 |"
