"""Server optimisers (Flower's FedAvgM, FedAdam): FedAvg when they do nothing, their closed
forms for one site whose every round moves the weights by the same step, and a resumed run
that continues the optimiser's momentum."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg, FedAvgM
from test_federated import BANK, make_experiment, write_sites
from test_train import assert_same_weights

from scicontrast.experiment import Experiment
from scicontrast.models import federated
from scicontrast.models.contrastive import build_model
from scicontrast.models.federated_calibration import initial_arrays

STEP = 0.01  # what the fake site subtracts from every float weight, every round


def test_the_default_is_plain_fedavg_and_fedavgm_at_rate_1_without_momentum_equals_it(tmp_path):
    items, pairs = write_sites(tmp_path, ["a"] * 6 + ["b"] * 6)
    plain = Experiment.from_dict(make_experiment(rounds=2, bank=BANK))
    assert type(federated.strategy(plain)) is FedAvg
    neutral = make_experiment(
        rounds=2, bank=BANK, aggregation="fedavgm", server={"learning_rate": 1.0, "momentum": 0.0}
    )
    assert isinstance(federated.strategy(Experiment.from_dict(neutral)), FedAvgM)
    federated.federate(plain, items, pairs, tmp_path / "fedavg")
    federated.federate(Experiment.from_dict(neutral), items, pairs, tmp_path / "fedavgm")
    assert_same_weights(tmp_path / "fedavg" / "model.pt", tmp_path / "fedavgm" / "model.pt")


def stepping_site(name: str) -> ClientApp:
    """A site whose training subtracts ``STEP`` from each float weight it receives."""
    app = ClientApp()

    @app.train()
    def train_round(message: Message, context: Context) -> Message:
        received = message.content["arrays"].to_numpy_ndarrays()
        keys = list(message.content["arrays"].keys())
        moved = {
            key: torch.from_numpy(np.asarray(v - STEP if v.dtype.kind == "f" else v))
            for key, v in zip(keys, received, strict=True)
        }
        reply = RecordDict(
            {
                "arrays": ArrayRecord(moved),
                "metrics": MetricRecord({"num-examples": 4, "loss": 0.0}),
                "site": ConfigRecord({"name": name}),
            }
        )
        return Message(reply, reply_to=message)

    return app


def fedavgm_total(rounds: int, rate: float, momentum: float) -> float:
    """How far FedAvgM moves a weight in ``rounds`` rounds of pseudo-gradient ``STEP``:
    ``v^r = STEP (1 - m^r) / (1 - m)``, summed and times ``eta``."""
    return rate * STEP * sum((1 - momentum**r) / (1 - momentum) for r in range(1, rounds + 1))


def fedadam_total(rounds: int, rate: float, beta_1: float, beta_2: float, tau: float) -> float:
    """The same for Flower's FedAdam (``eta`` bias-corrected with server round ``r + 1``):
    ``m^r = (1 - b1^r) STEP``, ``v^r = (1 - b2^r) STEP^2``."""
    total = 0.0
    for r in range(1, rounds + 1):
        eta = rate * np.sqrt(1 - beta_2 ** (r + 1)) / (1 - beta_1 ** (r + 1))
        total += eta * (1 - beta_1**r) * STEP / (np.sqrt(1 - beta_2**r) * STEP + tau)
    return total


@pytest.mark.parametrize(
    ("aggregation", "server", "total"),
    [
        ("fedavgm", {"learning_rate": 0.5, "momentum": 0.9}, fedavgm_total(4, 0.5, 0.9)),
        (
            "fedadam",
            {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.99, "tau": 0.001},
            fedadam_total(4, 0.001, 0.9, 0.99, 0.001),
        ),
    ],
)
def test_one_site_follows_the_optimisers_closed_form_through_a_resume(
    tmp_path, aggregation, server, total
):
    experiment = Experiment.from_dict(
        make_experiment(rounds=4, aggregation=aggregation, server=server)
    )
    context = Context(run_id=0, node_id=1, node_config={}, state=RecordDict(), run_config={})
    grid = federated.LocalGrid({1: (stepping_site("a"), context)})
    # Stopped after two rounds and resumed: the momentum must survive the state file.
    federated.run_server(grid, experiment, tmp_path, stop_after_rounds=2)
    path = federated.run_server(grid, experiment, tmp_path)
    start = initial_arrays(experiment)
    final = torch.load(path, weights_only=True)["state_dict"]
    buffers = {k for k, _ in build_model(experiment).named_buffers()}
    for key, value in start.items():
        if value.dtype.kind != "f":
            continue
        # Parameters take the optimiser's steps; batch-norm statistics the plain average.
        moved = 4 * STEP if key in buffers else total
        np.testing.assert_allclose(final[key].numpy(), value - moved, rtol=0, atol=1e-6)
        assert final[key].dtype == torch.from_numpy(value).dtype, key
