r"""Federated InfoNCE on Flower: sites keep their items, the server averages their weights.

::

    round r:  server --(w^r, bank B^r, config)--> every site
              site k: local_epochs epochs of train() from w^r on its own items, the bank's
                      rows as extra negatives  --(w_k, n_k, projections)--> server
              server: w^{r+1} = sum_k n_k w_k / sum_k n_k   (FedAvg; FedProx adds
                      (mu / 2) ||w - w^r||^2 to each site's loss; FedAvgM, FedAdam and
                      FedYogi step from w^r along that average's pseudo-gradient,
                      scicontrast.models.federated_server), B^{r+1} = newest rows

with ``n_k`` the site's number of groups. The server loop is a Flower ``ServerApp``
(:func:`run_server`) that drives Flower's ``FedAvg`` / ``FedProx`` strategy (node sampling,
``min_available_nodes``, the weighted average); each site is a Flower ``ClientApp``
(:func:`scicontrast.models.federated_client.site_round`). :func:`federate` runs them in one
process through :class:`LocalGrid`, a Flower ``Grid`` that hands each message to the site's
``ClientApp`` directly; Flower's own simulation engine needs Ray, which is heavy for a few
sites on a laptop. The same apps run as separate processes across institutions with
``flower-superlink`` and ``flower-supernode`` (``scicontrast.models.federated_apps``,
docs/federated.md).

A site whose reply is an error (it crashed, or lost its connection) is left out of that
round's average and rejoins the next; a round with fewer than ``federated.min_sites``
replies stops the run. After every round the server writes ``server_state.pt`` (round, global
weights, bank, bytes); a rerun resumes after the last completed round and ends with the
same weights as an uninterrupted run.

Outputs in ``out_dir``: ``model.pt`` (the global model, bank emptied: it never carries a
site's projections), ``rounds.jsonl`` (per round: sites that answered, their mean loss,
bytes sent per site each way), ``server_state.pt``, and ``sites/<name>/`` (each site's
items, pairs, checkpoint and ``metrics.jsonl``; in a deployment these stay at the site).
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.supercore.task_identity import TaskIdentity

from scicontrast.data_adapters.base import Items, check_pairs_table
from scicontrast.data_adapters.pairs_table import read_pairs
from scicontrast.errors import ConfigError, InputDataError, Preempted, ScicontrastError
from scicontrast.experiment import Experiment
from scicontrast.io import atomic_path, write_parquet
from scicontrast.models.contrastive import build_model, save_model
from scicontrast.models.federated_calibration import calibrate, initial_arrays, site_moments
from scicontrast.models.federated_client import LocalSite, site_round
from scicontrast.models.federated_server import (
    SERVER_OPTIMIZERS,
    aggregate,
    optimizer_state,
    restore,
    server_strategy,
)
from scicontrast.models.federated_sites import Site, build_sites, check_sites
from scicontrast.models.negative_bank import BankStore
from scicontrast.models.run_state import experiment_hash

logger = logging.getLogger("scicontrast.federated")

SERVER_STATE = "server_state.pt"
ROUNDS = "rounds.jsonl"
# Flower's error code for an exception raised inside a ClientApp.
CLIENT_APP_RAISED_EXCEPTION = 300


def check_experiment(experiment: Experiment) -> None:
    """Refuse federated settings that cannot run (before anything is written)."""
    where = f"experiments.{experiment.name}"
    settings, training = experiment.federated_section(), experiment.training
    total = settings.rounds * settings.local_epochs
    if training.epochs != total:
        raise ConfigError(
            f"{where}.training.epochs is {training.epochs}, but federated.rounds x "
            f"local_epochs is {total}: set them equal (a site's schedule spans all rounds)"
        )
    for key, most in (("ensemble", 1), ("swa_epochs", 0), ("grad_cache_views", 0), ("gpus", 1)):
        if getattr(training, key) > most:
            raise ConfigError(f"{where}.training.{key}: not implemented for federated training")
    if experiment.loss.queue_size:
        raise ConfigError(f"{where}.loss.queue_size: MoCo is not implemented for federated sites")


class LocalGrid(Grid):
    """A Flower ``Grid`` whose nodes are ``ClientApp`` objects in this process.

    ``push_messages`` runs the destination's app on the message at once; an exception in the
    app becomes an error reply, as a SuperNode sends when its ClientApp raises. It plays
    Flower's runtime too: the process's task identity (run, node) is the server's, and the
    site's while its app runs.
    """

    def __init__(self, nodes: dict[int, tuple[ClientApp, Context]]) -> None:
        self.nodes = nodes
        self.replies: dict[str, Message] = {}
        self._run = None
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = 0
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            app, context = self.nodes[message.metadata.dst_node_id]
            TaskIdentity.node_id = message.metadata.dst_node_id
            try:
                reply = app(message, context)
            except Preempted:
                raise
            except Exception as exc:  # any failure at a site is that site's error reply
                logger.warning("node %d failed: %s", message.metadata.dst_node_id, exc)
                reply = Message(Error(CLIENT_APP_RAISED_EXCEPTION, str(exc)), reply_to=message)
            finally:
                TaskIdentity.node_id = SUPERLINK_NODE_ID
            self.replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def strategy(experiment: Experiment) -> FedAvg:
    """Flower's FedAvg (FedProx, or a server optimiser) sampling every connected site once
    ``min_sites`` are."""
    settings = experiment.federated_section()
    options = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": settings.min_sites,
        "min_available_nodes": settings.min_sites,
    }
    if settings.aggregation == "fedprox":
        return FedProx(proximal_mu=settings.proximal_mu, **options)
    if settings.aggregation in SERVER_OPTIMIZERS:
        return server_strategy(settings, options)
    return FedAvg(**options)


def run_server(
    grid: Grid,
    experiment: Experiment,
    out_dir: Path,
    stop_after_rounds: int | None = None,
) -> Path:
    """The server's rounds (module docstring); returns the path of ``model.pt``."""
    settings = experiment.federated_section()
    state = _load_state(out_dir, experiment)
    fed = strategy(experiment)
    store = _bank_store(experiment, state)
    if settings.batch_norm == "global" and not state["arrays"]:
        start = initial_arrays(experiment)
        state["arrays"] = calibrate(grid, start, settings.min_sites, "initial")[0]
    elif settings.aggregation in SERVER_OPTIMIZERS and not state["arrays"]:
        # The first pseudo-gradient needs the weights round 0 starts from.
        state["arrays"] = initial_arrays(experiment)
    for round_index in range(state["round"], settings.rounds):
        if stop_after_rounds is not None and round_index >= stop_after_rounds:
            return out_dir / "model.pt"
        _one_round(grid, fed, experiment, round_index, state, store)
        state["round"] = round_index + 1
        _save_state(out_dir, state, store)
    return _save_global_model(out_dir, experiment, state["arrays"])


def _one_round(
    grid: Grid,
    fed: FedAvg,
    experiment: Experiment,
    round_index: int,
    state: dict[str, Any],
    store: BankStore | None,
) -> None:
    """Send, train, average; merge the shared projections into the bank; log the round."""
    settings = experiment.federated_section()
    share = store is not None and round_index % settings.bank.refresh_every == 0
    # A ConfigRecord list needs an element to know its type: [""] names no site.
    names = list(state["site_names"]) or [""]
    config = ConfigRecord({"round": round_index, "share": share, "site-names": names})
    arrays = ArrayRecord({k: torch.from_numpy(v) for k, v in state["arrays"].items()})
    restore(fed, state.get("server_optimizer"))
    messages = list(fed.configure_train(round_index + 1, arrays, config, grid))
    bank = None
    if store is not None:
        bank = ArrayRecord(numpy_ndarrays=[store.embeddings, store.sites, store.groups])
        for message in messages:
            message.content["bank"] = bank
    down = arrays.count_bytes() + (0 if bank is None else bank.count_bytes())
    replies = sorted(
        grid.send_and_receive(messages),
        key=lambda m: "" if m.has_error() else str(m.content["site"]["name"]),
    )
    answered = [m for m in replies if not m.has_error()]
    if len(answered) < settings.min_sites:
        raise ScicontrastError(
            f"federated round {round_index}: {len(answered)} of {len(messages)} sites answered, "
            f"fewer than federated.min_sites = {settings.min_sites}"
        )
    up, losses = _take_shared(answered, state, store)
    _aggregate(fed, experiment, round_index + 1, answered, state)
    if settings.batch_norm == "global":
        state["arrays"], down_bn, up_bn = calibrate(
            grid, state["arrays"], settings.min_sites, f"round {round_index}"
        )
        down += down_bn
        up = {name: sent + up_bn for name, sent in up.items()}
    state["log"].append(
        {
            "round": round_index,
            "sites": sorted(up),
            "failed": len(replies) - len(answered),
            "loss": float(np.mean(list(losses.values()))),
            "site_loss": losses,
            "bytes_down_per_site": down,
            "bytes_up_per_site": up,
        }
    )
    logger.info(
        "round %d: %d sites, mean loss %.4f", round_index, len(up), state["log"][-1]["loss"]
    )


def _aggregate(
    fed: FedAvg,
    experiment: Experiment,
    server_round: int,
    answered: list[Message],
    state: dict[str, Any],
) -> None:
    """The next global weights into ``state``: the sites' average (FedAvg, FedProx) or the
    server optimiser's step (``scicontrast.models.federated_server``), with its state."""
    if experiment.federated_section().aggregation in SERVER_OPTIMIZERS:
        buffers = {k for k, _ in build_model(experiment).named_buffers()}
        state["arrays"] = aggregate(fed, server_round, answered, buffers)
        state["server_optimizer"] = optimizer_state(fed)
    else:
        averaged, _ = fed.aggregate_train(server_round, answered)
        state["arrays"] = {k: v.numpy() for k, v in averaged.to_torch_state_dict().items()}


def _take_shared(
    answered: list[Message], state: dict[str, Any], store: BankStore | None
) -> tuple[dict[str, int], dict[str, float]]:
    """Merge each reply's projections into the bank (in site-name order) and take them and
    the site's name out of it, leaving what Flower's strategy averages. Returns the bytes
    each site sent and its loss."""
    up, losses = {}, {}
    for message in answered:
        name = str(message.content.pop("site")["name"])
        shared = message.content.pop("bank", None)
        up[name] = message.content["arrays"].count_bytes()
        losses[name] = float(message.content["metrics"]["loss"])
        if shared is not None and store is not None:
            up[name] += shared.count_bytes()
            if name not in state["site_names"]:
                state["site_names"].append(name)
            embeddings, groups = shared.to_numpy_ndarrays()
            store.add(embeddings, state["site_names"].index(name), groups)
    return up, losses


def _bank_store(experiment: Experiment, state: dict[str, Any]) -> BankStore | None:
    bank = experiment.federated_section().bank
    if not bank.enabled:
        return None
    store = BankStore(bank.size, experiment.head.output_dim)
    if state.get("bank") is not None:
        store.load(state["bank"])
    return store


def _load_state(out_dir: Path, experiment: Experiment) -> dict[str, Any]:
    path = out_dir / SERVER_STATE
    fresh = {
        "config_hash": experiment_hash(experiment),
        "round": 0,
        "arrays": {},
        "site_names": [],
        "log": [],
        "bank": None,
        "server_optimizer": None,
    }
    if not path.exists():
        return fresh
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("config_hash") != experiment_hash(experiment):
        logger.warning("%s was written for another experiment config; starting fresh", path)
        return fresh
    rounds = experiment.federated_section().rounds
    logger.info("resuming after round %d of %d", state["round"], rounds)
    return state


def _save_state(out_dir: Path, state: dict[str, Any], store: BankStore | None) -> None:
    state["bank"] = None if store is None else store.state()
    with atomic_path(out_dir / SERVER_STATE) as tmp:
        torch.save(state, tmp)
    with atomic_path(out_dir / ROUNDS) as tmp:
        tmp.write_text("".join(json.dumps(line) + "\n" for line in state["log"]))


def _save_global_model(
    out_dir: Path, experiment: Experiment, arrays: dict[str, np.ndarray]
) -> Path:
    """``model.pt`` from the global weights; the bank buffers stay empty."""
    model = build_model(experiment)
    state = model.state_dict()
    state.update({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
    model.load_state_dict(state)
    path = out_dir / "model.pt"
    save_model(path, model, experiment)
    return path


def federate(
    experiment: Experiment,
    items_dir: str | Path,
    pairs_path: str | Path,
    out_dir: str | Path,
    stop_after_rounds: int | None = None,
) -> Path:
    """Split the experiment's items into its sites and run every round in this process.

    Args:
        experiment: The typed experiment, with a ``federated`` section.
        items_dir: The union's items (split by ``federated.split_by``; without it, each
            site reads its own items with its adapter and these serve evaluation only).
        pairs_path: The pairs table over those items.
        out_dir: Where ``model.pt``, ``rounds.jsonl``, ``server_state.pt`` and ``sites/`` go.
        stop_after_rounds: Stop after this many rounds (counted from the start), leaving the
            state from which a rerun resumes: simulates an interruption.

    Returns:
        The path of ``model.pt`` (which exists only once every round is done).

    Raises:
        ConfigError, InputDataError: bad settings or sites (naming the site); nothing is
            written then.
    """
    check_experiment(experiment)
    out_dir = Path(out_dir)
    items = Items.load(items_dir)
    pairs = read_pairs(pairs_path, items.table["item_id"])
    check_pairs_table(pairs, items, str(pairs_path))
    # Ids as values (not codes over all items' ids): each site's table is written on its own.
    sites = build_sites(experiment, items, pairs.astype({"item_id": object}))
    check_sites(experiment, sites, build_model(experiment))
    min_sites = experiment.federated_section().min_sites
    if min_sites > len(sites):
        raise ConfigError(
            f"experiments.{experiment.name}.federated.min_sites is "
            f"{min_sites}, but there are {len(sites)} sites"
        )
    nodes = {}
    for node_id, site in enumerate(sites, start=1):
        local = LocalSite(
            site.name,
            experiment,
            out_dir / "sites" / site.name / "items",
            out_dir / "sites" / site.name / "pairs.parquet",
            out_dir / "sites" / site.name / "model",
        )
        _write_site(site, local)
        nodes[node_id] = (_client_app(local), _context(node_id))
    return run_server(LocalGrid(nodes), experiment, out_dir, stop_after_rounds)


def _write_site(site: Site, local: LocalSite) -> None:
    """The site's items and pairs in its folder, unless the same ones are there already
    (a resumed run); a changed split or pair builder replaces them."""
    if local.pairs_path.exists() and local.items_dir.exists():
        same_items = (
            Items.load(local.items_dir).table["item_id"].equals(site.items.table["item_id"])
        )
        if same_items and _same_pairs(local.pairs_path, site):
            return
        shutil.rmtree(local.items_dir)
    site.items.save(local.items_dir)
    write_parquet(local.pairs_path, site.pairs)


def _same_pairs(path: Path, site: Site) -> bool:
    """Whether the pairs table at ``path`` is ``site``'s."""
    try:
        pairs = read_pairs(path, site.items.table["item_id"])
    except InputDataError:  # it names an item the site lacks
        return False
    return pairs.astype({"item_id": object}).equals(site.pairs)


def _client_app(site: LocalSite) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train_round(message: Message, context: Context) -> Message:
        return site_round(site, message)

    @app.query()
    def moments(message: Message, context: Context) -> Message:
        return site_moments(site, message)

    return app


def _context(node_id: int) -> Context:
    return Context(run_id=0, node_id=node_id, node_config={}, state=RecordDict(), run_config={})
