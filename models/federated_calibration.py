"""The server's side of ``federated.batch_norm: global``: the global model's batch-norm
statistics set to the union's, from moments the sites measure
(:mod:`scicontrast.models.federated_norm` states the method and the math)."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from torch.nn.parameter import UninitializedParameter

from scicontrast.data_adapters.base import Items
from scicontrast.errors import ConfigError, ScicontrastError
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import build_model
from scicontrast.models.federated_client import LocalSite, site_model, travels
from scicontrast.models.federated_norm import MEAN, input_moments, mixture_variance


def initial_arrays(experiment: Experiment) -> dict[str, np.ndarray]:
    """The seeded initial weights :func:`~scicontrast.models.train.train` starts from (what
    round 0 trains from), less what does not travel between sites and server.

    Raises:
        ConfigError: the model has lazy layers (its weights exist only once data flows).
    """
    torch.manual_seed(experiment.training.seed)
    model = build_model(experiment)
    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        raise ConfigError(
            f"experiments.{experiment.name}.federated: batch_norm global and the server "
            "optimisers need an encoder without lazy layers (give the graph encoder its "
            "in_channels)"
        )
    return {k: v.numpy() for k, v in model.state_dict().items() if travels(k)}


def calibrate(
    grid: Grid, arrays: dict[str, np.ndarray], min_sites: int, group_id: str
) -> tuple[dict[str, np.ndarray], int, int]:
    """``arrays`` with every batch-norm layer's running statistics set to the union's, one
    pass per layer; and the bytes each site received and sent over the passes.

    Raises:
        ScicontrastError: fewer than ``min_sites`` sites answered a pass.
    """
    down = up = 0
    for _ in range(sum(key.endswith(MEAN) for key in arrays)):
        record = ArrayRecord({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
        messages = [
            Message(RecordDict({"arrays": record}), node, MessageType.QUERY, group_id=group_id)
            for node in grid.get_node_ids()
        ]
        replies = [m for m in grid.send_and_receive(messages) if not m.has_error()]
        if len(replies) < min_sites:
            raise ScicontrastError(
                f"batch-norm calibration ({group_id}): {len(replies)} of {len(messages)} sites "
                f"answered, fewer than federated.min_sites = {min_sites}"
            )
        # One order of the sums (by site name, as FedAvg's), so that a resumed run and a
        # deployment across machines add them up the same way.
        replies.sort(key=lambda m: str(m.content["site"]["name"]))
        shares = np.array([float(m.content["metrics"]["num-examples"]) for m in replies])
        shares /= shares.sum()
        moments = [m.content["arrays"].to_torch_state_dict() for m in replies]
        averaged = {
            key: sum(w * m[key].double().numpy() for w, m in zip(shares, moments, strict=True))
            for key in moments[0]
        }
        union = mixture_variance(averaged)
        arrays = {**arrays, **{k: v.astype(np.float32) for k, v in union.items()}}
        down += record.count_bytes()
        up += replies[0].content["arrays"].count_bytes()
    return arrays, down, up


def site_moments(site: LocalSite, message: Message) -> Message:
    """A site's answer to a calibration pass: the input moments of every batch-norm layer
    over its items under the weights and statistics it received, and its number of items."""
    model, batches = site_model(site, None)
    state = model.state_dict()
    state.update(message.content["arrays"].to_torch_state_dict())
    model.load_state_dict(state)
    reply = RecordDict(
        {
            "arrays": ArrayRecord(input_moments(model, batches)),
            "metrics": MetricRecord({"num-examples": len(Items.load(site.items_dir))}),
            "site": ConfigRecord({"name": site.name}),
        }
    )
    return Message(reply, reply_to=message)
