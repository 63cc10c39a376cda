"""What a short epoch skips: the checkpoint until ``training.checkpoint_seconds`` have passed
(the end of the run and of a ``stop_after_epochs`` piece still write one), and the held-out
pass until ``training.heldout_min_steps`` steps were taken; no weight or number changes."""

from __future__ import annotations

import torch
from test_train import (
    assert_same_weights,
    make_experiment,
    read_metrics,
    toy_data,  # noqa: F401 (a fixture)
    without_timings,
)

from scicontrast.models import train as train_module
from scicontrast.models.train import train


def saved_positions(monkeypatch) -> list[int]:
    """The ``epochs_done`` of every checkpoint the loop writes from now on."""
    saved: list[int] = []
    save = train_module.save_checkpoint

    def recording(loop, position, device):
        saved.append(position.epochs_done)
        save(loop, position, device)

    monkeypatch.setattr(train_module, "save_checkpoint", recording)
    return saved


def test_short_epochs_checkpoint_only_at_the_end_with_the_same_results(
    tmp_path,
    monkeypatch,
    toy_data,  # noqa: F811
):
    saved = saved_positions(monkeypatch)
    every = train(make_experiment(epochs=3, checkpoint_seconds=0), *toy_data, tmp_path / "a")
    assert saved == [1, 2, 3]
    saved.clear()
    gated = train(make_experiment(epochs=3, checkpoint_seconds=3600), *toy_data, tmp_path / "b")
    assert saved == [3]
    assert_same_weights(every, gated)
    assert without_timings(read_metrics(tmp_path / "a")) == without_timings(
        read_metrics(tmp_path / "b")
    )


def test_a_piece_of_training_ends_with_a_checkpoint_and_resumes_bit_for_bit(
    tmp_path,
    monkeypatch,
    toy_data,  # noqa: F811
):
    experiment = make_experiment(epochs=4, checkpoint_seconds=3600)
    full = train(experiment, *toy_data, tmp_path / "full", progress=False)
    saved = saved_positions(monkeypatch)
    pieces = tmp_path / "pieces"
    for stop in (1, 3):
        train(experiment, *toy_data, pieces, progress=False, stop_after_epochs=stop)
    assert saved == [1, 3]
    assert torch.load(pieces / "checkpoint.pt", weights_only=True)["epochs_done"] == 3
    assert_same_weights(full, train(experiment, *toy_data, pieces, progress=False))


def test_held_out_passes_wait_for_enough_steps_and_keep_their_numbers(
    tmp_path,
    toy_data,  # noqa: F811
):
    # 6 training groups in batches of 3: 2 steps an epoch, so 4 steps make every 2nd epoch.
    sparse = make_experiment(epochs=5, holdout_fraction=0.25, heldout_min_steps=4)
    dense = make_experiment(epochs=5, holdout_fraction=0.25, heldout_min_steps=1)
    lines = {}
    for name, experiment in (("sparse", sparse), ("dense", dense)):
        train(experiment, *toy_data, tmp_path / name, progress=False)
        lines[name] = {
            r["epoch"]: r for r in read_metrics(tmp_path / name) if r["kind"] == "heldout"
        }
    assert sorted(lines["sparse"]) == [1, 3, 4] and sorted(lines["dense"]) == [0, 1, 2, 3, 4]
    assert all(lines["sparse"][e] == lines["dense"][e] for e in (1, 3, 4))
    assert_same_weights(tmp_path / "sparse" / "model.pt", tmp_path / "dense" / "model.pt")
