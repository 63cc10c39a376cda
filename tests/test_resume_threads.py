"""A resumed run warns when it trains with other torch threads than the run it resumes."""

from __future__ import annotations

import logging

import torch
from test_train import make_experiment, toy_data  # noqa: F401 (a fixture)

from scicontrast.models.train import train


def test_resuming_with_another_thread_count_warns(tmp_path, toy_data, caplog):  # noqa: F811
    experiment, out = make_experiment(epochs=3), tmp_path / "run"
    warning = "written by a run with 1 torch threads, this one has 2"
    with caplog.at_level(logging.WARNING, logger="scicontrast.train"):
        train(experiment, *toy_data, out, progress=False, stop_after_epochs=1, num_threads=1)
        assert torch.load(out / "checkpoint.pt", weights_only=True)["torch_threads"] == 1
        train(experiment, *toy_data, out, progress=False, stop_after_epochs=2, num_threads=1)
        assert warning not in caplog.text  # the same count: bitwise equal, nothing to say
        train(experiment, *toy_data, out, progress=False, num_threads=2)
    assert warning in caplog.text
