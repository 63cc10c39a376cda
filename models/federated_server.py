r"""Server optimisers for federated training: Flower's FedAvgM, FedAdam and FedYogi.

FedAvg sets the next global weights to the sites' weighted average ``w_avg``. The FedOpt
family (Hsu et al. 2019; Reddi et al. 2021, "Adaptive Federated Optimization") reads the
round's change as a pseudo-gradient ``g^r = w^r - w_avg^r`` (one array per state-dict entry,
each of its own shape) and steps a server optimiser on it:

* ``fedavgm`` (Flower's ``FedAvgM``, heavy-ball SGD): ``v^1 = g^1``,
  ``v^r = m v^{r-1} + g^r``, ``w^{r+1} = w^r - eta v^r``. With ``eta = 1`` and ``m = 0`` it
  is FedAvg; with constant ``g`` the ``r``-th step is ``eta g (1 - m^r) / (1 - m)``, up to
  ``1 / (1 - m)`` times FedAvg's: the lever on FedAvg's few sequential steps.
* ``fedadam`` / ``fedyogi`` (Flower's ``FedAdam`` / ``FedYogi``): Adam's (Yogi's) first and
  second moments of ``-g^r`` with ``beta_1``, ``beta_2``, and
  ``w^{r+1} = w^r + eta_r m^r / (sqrt(v^r) + tau)``, ``eta_r`` Flower's bias-corrected
  ``eta``.

The updates are those classes' own (:func:`aggregate` calls their ``aggregate_train``). This
module picks the class from ``federated.aggregation`` and ``federated.server``, carries the
optimiser's state (momentum, moments) through the server's state file so that a resumed run
continues it (:func:`optimizer_state`, :func:`restore`), and gives the buffers (batch-norm
running mean, variance and count) FedAvg's plain weighted average: they are statistics of
the sites' data, not weights a gradient moves, and a momentum step could drive a variance
below zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedYogi
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from scicontrast.errors import ScicontrastError
from scicontrast.experiment import Federated

SERVER_OPTIMIZERS = ("fedavgm", "fedadam", "fedyogi")
# The attributes in which Flower's strategies keep their optimiser's state between rounds.
STATE_ATTRIBUTES = ("momentum_vector", "m_t", "v_t")


def server_strategy(settings: Federated, options: dict[str, Any]) -> FedAvg:
    """Flower's strategy for ``settings.aggregation`` (one of :data:`SERVER_OPTIMIZERS`),
    built with ``options`` (node sampling) and ``settings.server``'s rates; an unset
    ``learning_rate`` is Flower's default for the strategy (1 for FedAvgM, 0.1 for FedOpt)."""
    server = settings.server
    strategy_class: type[FedAvg]
    if settings.aggregation == "fedavgm":
        strategy_class, arguments = FedAvgM, {"server_momentum": server.momentum}
        rate_name = "server_learning_rate"
    else:
        strategy_class = {"fedadam": FedAdam, "fedyogi": FedYogi}[settings.aggregation]
        arguments = {"beta_1": server.beta_1, "beta_2": server.beta_2, "tau": server.tau}
        rate_name = "eta"
    if server.learning_rate is not None:
        arguments[rate_name] = server.learning_rate
    return strategy_class(**arguments, **options)


def restore(strategy: FedAvg, state: dict[str, Any] | None) -> None:
    """Give ``strategy`` the optimiser state :func:`optimizer_state` took (none: a fresh
    optimiser), before the round's ``configure_train``.

    FedAvgM keeps the weights it last produced as the start of the next pseudo-gradient;
    clearing them makes ``configure_train`` take the weights actually sent, which differ
    from those in their buffers (averaged here, not stepped) and after a batch-norm
    calibration."""
    for name in STATE_ATTRIBUTES:
        if hasattr(strategy, name):
            setattr(strategy, name, None if state is None else state.get(name))
    if isinstance(strategy, FedAvgM):
        strategy.current_arrays = None


def optimizer_state(strategy: FedAvg) -> dict[str, Any]:
    """The strategy's optimiser state (for the server's state file)."""
    return {name: getattr(strategy, name) for name in STATE_ATTRIBUTES if hasattr(strategy, name)}


def aggregate(
    strategy: FedAvg, server_round: int, replies: Iterable[Message], buffers: set[str]
) -> dict[str, np.ndarray]:
    """The next global weights: the strategy's update for the parameters, FedAvg's weighted
    average (Flower's ``aggregate_arrayrecords``) for the ``buffers``; each parameter keeps
    the dtype of the sites' weights (Flower's FedAdam computes in float64)."""
    replies = list(replies)
    plain = aggregate_arrayrecords([m.content for m in replies], strategy.weighted_by_key)
    stepped, _ = strategy.aggregate_train(server_round, replies)
    if stepped is None:
        raise ScicontrastError(f"federated round {server_round - 1}: no reply to aggregate")
    out = {}
    for key, array in plain.items():
        average = array.numpy()
        out[key] = average if key in buffers else stepped[key].numpy().astype(average.dtype)
    return out
