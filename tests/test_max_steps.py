"""``training.max_steps_per_epoch``: an epoch cut to its first k batches (benchmarks/scale.py
trains on 10^6 items that way)."""

from __future__ import annotations

from test_train import (
    make_experiment,
    read_metrics,
    toy_data,  # noqa: F401 (a fixture)
)

from scicontrast.models.run_state import experiment_hash, stored_experiment_hash
from scicontrast.models.train import train


def test_a_capped_epoch_is_the_first_steps_of_the_whole_one(tmp_path, toy_data):  # noqa: F811
    # 8 groups in batches of 3: three steps an epoch, capped to two.
    whole = read_metrics(train(make_experiment(epochs=1), *toy_data, tmp_path / "whole").parent)
    capped_experiment = make_experiment(epochs=2, max_steps_per_epoch=2)
    capped = read_metrics(train(capped_experiment, *toy_data, tmp_path / "capped").parent)
    steps = [r for r in capped if r["kind"] == "step"]
    assert [(r["epoch"], r["step"]) for r in steps] == [(0, 1), (0, 2), (1, 3), (1, 4)]
    whole_steps = [r for r in whole if r["kind"] == "step"]
    assert len(whole_steps) == 3
    # Same batches in the same order at the same learning rate: the same first two steps.
    assert steps[:2] == whole_steps[:2]
    epoch = next(r for r in capped if r["kind"] == "epoch")
    assert epoch["loss"] == (steps[0]["loss"] + steps[1]["loss"]) / 2


def test_the_cap_counts_in_the_hash_only_when_set():
    base = make_experiment(epochs=2)
    assert base.training.max_steps_per_epoch is None
    stored = base.to_dict()
    old = {
        **stored,
        "training": {k: v for k, v in stored["training"].items() if k != "max_steps_per_epoch"},
    }
    assert stored_experiment_hash(old) == experiment_hash(base)
    assert experiment_hash(base) != experiment_hash(
        make_experiment(epochs=2, max_steps_per_epoch=1)
    )
