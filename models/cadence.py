"""When the training loop writes a checkpoint and runs the held-out pass, after an epoch.

Both are outputs that a hand-written loop does not make, and on a run of short epochs
(a 20-100 ms demo epoch) each cost a tenth to a half of the epoch when made after every
one (docs/experiments/epochcost.md). So by default a checkpoint waits for
``training.checkpoint_seconds`` of training since the last one, and the held-out pass for
``training.heldout_min_steps`` optimiser steps; neither changes a weight or a number, only
how often they are written. Epochs count from 0.
"""

from __future__ import annotations

import time

from scicontrast.experiment import Training


def every(every: int, epoch: int, epochs: int) -> bool:
    """Whether epoch ``epoch`` is one of every ``every``-th of ``epochs``, or the last."""
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


def checkpoint_due(
    settings: Training, epoch: int, last_of_call: bool, checkpointed_at: float
) -> bool:
    """Whether a checkpoint follows epoch ``epoch``.

    Always after the run's last epoch; after every ``checkpoint_every``-th epoch that is the
    last of this call (``stop_after_epochs``: training in pieces resumes where it stopped),
    or that ends at least ``checkpoint_seconds`` after ``checkpointed_at`` (the
    ``time.monotonic()`` of the last checkpoint, or of the start of this call), as
    Lightning's ``train_time_interval``. A crash then loses at most that long plus an epoch;
    SIGTERM writes one anyway (the loop's own check).
    """
    if epoch + 1 == settings.epochs:
        return True
    if not every(settings.checkpoint_every, epoch, settings.epochs):
        return False
    return last_of_call or time.monotonic() - checkpointed_at >= settings.checkpoint_seconds


def heldout_cadence(settings: Training, steps_per_epoch: int) -> int:
    """Every how many epochs the held-out pass runs (and after the last):
    ``k = max(heldout_every, ceil(heldout_min_steps / steps_per_epoch))``.

    The pass is a forward of the held-out views: per view about a third of a training
    step's work (forward, backward, update). Where an epoch is one step over a whole graph,
    the pass forwards that whole graph again, a third of the epoch; waiting a few steps
    keeps it a small share, and changes nothing where an epoch has that many steps. A
    function of the settings and the batch count alone, so a resumed run keeps it.
    """
    return max(settings.heldout_every, -(-settings.heldout_min_steps // max(1, steps_per_epoch)))
