"""Checkpoints and held-out numbers every k epochs (``training.checkpoint_every``,
``training.heldout_every``): fewer writes, the same weights, resume still bit for bit."""

from __future__ import annotations

import torch
from test_train import (
    assert_same_weights,
    epoch_lines,
    make_experiment,
    read_metrics,
    toy_data,  # noqa: F401 (a fixture)
    without_timings,
)

from scicontrast.models.run_state import experiment_hash, stored_experiment_hash
from scicontrast.models.train import train


def test_a_run_interrupted_between_checkpoints_resumes_to_the_uninterrupted_weights(
    tmp_path,
    toy_data,  # noqa: F811
):
    every_epoch = train(make_experiment(epochs=5), *toy_data, tmp_path / "every", progress=False)
    # checkpoint_seconds=0: every second epoch, whatever the clock says.
    experiment = make_experiment(epochs=5, checkpoint_every=2, checkpoint_seconds=0)
    full = train(experiment, *toy_data, tmp_path / "full", progress=False)
    assert_same_weights(every_epoch, full)  # checkpoints change no result

    pieces = tmp_path / "pieces"
    # Stopped after epoch 3 (of 1..5): the last checkpoint is epoch 2's.
    train(experiment, *toy_data, pieces, progress=False, stop_after_epochs=3)
    checkpoint = torch.load(pieces / "checkpoint.pt", weights_only=True)
    assert checkpoint["epochs_done"] == 2
    resumed = train(experiment, *toy_data, pieces, progress=False)
    assert_same_weights(full, resumed)
    resumed_records = read_metrics(pieces)
    assert [r["epoch"] for r in epoch_lines(resumed_records)] == [0, 1, 2, 3, 4]
    assert without_timings(resumed_records) == without_timings(read_metrics(full.parent))


def test_held_out_numbers_every_k_epochs_and_after_the_last(tmp_path, toy_data):  # noqa: F811
    experiment = make_experiment(epochs=5, holdout_fraction=0.25, heldout_every=2)
    every = make_experiment(epochs=5, holdout_fraction=0.25, heldout_min_steps=1)
    sparse = read_metrics(train(experiment, *toy_data, tmp_path / "sparse").parent)
    dense = read_metrics(train(every, *toy_data, tmp_path / "dense").parent)
    held_out = [r for r in sparse if r["kind"] == "heldout"]
    assert [r["epoch"] for r in held_out] == [1, 3, 4]
    dense_held_out = {r["epoch"]: r for r in dense if r["kind"] == "heldout"}
    assert held_out == [dense_held_out[e] for e in (1, 3, 4)]  # the pass changes no weights


def test_checkpoint_cadence_keeps_the_hash_and_default_keys_keep_old_checkpoints():
    base = make_experiment(epochs=5)
    assert experiment_hash(base) == experiment_hash(make_experiment(epochs=5, checkpoint_every=3))
    assert experiment_hash(base) != experiment_hash(make_experiment(epochs=5, heldout_every=3))
    stored = base.to_dict()
    old = {
        **stored,
        "training": {
            k: v
            for k, v in stored["training"].items()
            if k not in ("checkpoint_every", "heldout_every")
        },
    }
    assert stored_experiment_hash(old) == experiment_hash(base)
