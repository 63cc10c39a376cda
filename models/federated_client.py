"""A site's side of a federated round: what its Flower ``ClientApp`` does with a message.

Round ``r`` at a site::

    message (global weights w^r, bank B^r, config) --(share?)--> projections of a sample
        of its items under w^r (+ noise) --train(start_weights = w^r + B^r + anchors)-->
        local_epochs epochs --reply--> (w_site, number of groups, projections)

Local training is :func:`scicontrast.models.train.train` itself, resumed from the site's own
checkpoint in its state folder with the global weights loaded over the checkpoint's: the
site keeps its optimiser state, step count, learning-rate schedule and RNG across rounds, so
one site with the bank off trains exactly as central training does. The site's experiment
is the federated experiment unchanged; its ``training.epochs`` is ``rounds x
local_epochs``.

A round interrupted at a site (a crash, a lost connection) is redone from the copy of the
checkpoint taken when the round started (``before.pt``), so a redone or resumed round
gives the same weights as one that ran once. Only weights, projections and counts leave
the site.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.pairs_table import read_pairs
from scicontrast.experiment import Experiment
from scicontrast.io import atomic_path
from scicontrast.models.contrastive import ContrastiveModel, build_model
from scicontrast.models.negative_bank import OTHER_SITE, BankedInfoNCELoss, noisy
from scicontrast.models.proximal import ATTRIBUTE as PROXIMAL
from scicontrast.models.train import train
from scicontrast.registry import PAIR_BUILDERS

SITE_STATE = "site.json"
BEFORE = "before.pt"
CHECKPOINT = "checkpoint.pt"


def travels(key: str) -> bool:
    """Whether a state-dict entry is part of the weights sites and server exchange: not
    the bank (the server's) nor FedProx's anchors (copies of the global weights)."""
    return not (key.startswith("loss.bank") or key.startswith(f"{PROXIMAL}."))


@dataclass
class LocalSite:
    """What a site holds: its name, the experiment, its items and pairs, a state folder."""

    name: str
    experiment: Experiment
    items_dir: Path
    pairs_path: Path
    state_dir: Path


def site_round(site: LocalSite, message: Message) -> Message:
    """Answer one training message (module docstring): the reply Flower sends back."""
    content = message.content
    config = content["config"]
    start_epochs = _begin_round(site, int(config["round"]))
    template = build_model(site.experiment)
    arrays = content["arrays"]
    start = None
    if len(arrays):
        start = _start_weights(template, arrays.to_torch_state_dict(), content, site.name)
    reply = RecordDict()
    if config["share"]:
        reply["bank"] = ArrayRecord(numpy_ndarrays=list(_share(site, start, int(config["round"]))))
    epochs = start_epochs + _local_epochs(site)
    train(
        site.experiment,
        site.items_dir,
        site.pairs_path,
        site.state_dir,
        resume=True,
        progress=False,
        stop_after_epochs=epochs,
        start_weights=start,
    )
    weights = torch.load(site.state_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    _write_state(site, {"round": int(config["round"]), "start_epochs": start_epochs, "done": True})
    reply["arrays"] = ArrayRecord({k: v for k, v in weights["model"].items() if travels(k)})
    reply["metrics"] = MetricRecord(
        {"num-examples": _n_groups(site), "loss": _last_epoch_loss(site)}
    )
    reply["site"] = ConfigRecord({"name": site.name})
    return Message(reply, reply_to=message)


def _begin_round(site: LocalSite, round_index: int) -> int:
    """Epochs the site has trained before this round. Restores ``before.pt`` when the last
    round it started did not finish or is this one again (a resumed server), and starts
    the site over when the server did (a round before the site's last)."""
    path = site.state_dir / SITE_STATE
    previous = json.loads(path.read_text()) if path.exists() else None
    checkpoint, before = site.state_dir / CHECKPOINT, site.state_dir / BEFORE
    if previous is not None and round_index < previous["round"]:
        for stale in (checkpoint, before, site.state_dir / "metrics.jsonl"):
            stale.unlink(missing_ok=True)
        previous = None
    if previous is not None and (not previous["done"] or previous["round"] == round_index):
        if before.exists():
            shutil.copyfile(before, checkpoint)
        else:
            checkpoint.unlink(missing_ok=True)
        start = previous["start_epochs"]
    else:
        start = 0 if previous is None else previous["start_epochs"] + _local_epochs(site)
        if checkpoint.exists():
            with atomic_path(before) as tmp:
                shutil.copyfile(checkpoint, tmp)
        else:
            before.unlink(missing_ok=True)
    site.state_dir.mkdir(parents=True, exist_ok=True)
    _write_state(site, {"round": round_index, "start_epochs": start, "done": False})
    return start


def _local_epochs(site: LocalSite) -> int:
    return site.experiment.federated_section().local_epochs


def _write_state(site: LocalSite, state: dict[str, Any]) -> None:
    with atomic_path(site.state_dir / SITE_STATE) as tmp:
        tmp.write_text(json.dumps(state))


def _start_weights(
    template: ContrastiveModel,
    global_state: dict[str, torch.Tensor],
    content: RecordDict,
    site_name: str,
) -> dict[str, torch.Tensor]:
    """The full state dict a round starts from: global weights, the bank as this site sees
    it (its own rows keep their group ids), FedProx's anchors at the global weights."""
    state = dict(global_state)
    if "bank" in content and isinstance(template.loss, BankedInfoNCELoss):
        embeddings, sites, groups = content["bank"].to_numpy_ndarrays()
        names = list(content["config"]["site-names"])
        own = names.index(site_name) if site_name in names else OTHER_SITE - 1
        ids = np.where(sites == own, groups, OTHER_SITE)
        template.loss.set_bank(torch.from_numpy(embeddings), torch.from_numpy(ids))
    proximal = getattr(template, PROXIMAL, None)
    if proximal is not None:
        for name, buffer in proximal.names:
            state[f"{PROXIMAL}.{buffer}"] = global_state[name]
    for key, value in template.state_dict().items():
        if not travels(key) and key not in state:
            state[key] = value
    return state


def _share(
    site: LocalSite, start: dict[str, torch.Tensor] | None, round_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Projections ``[n, d]`` of ``share_per_site`` of the site's groups (one item each) under
    the global weights, with the configured noise, and their group ids ``[n]``."""
    experiment = site.experiment
    seed = experiment.training.seed
    bank = experiment.federated_section().bank
    model, batches = site_model(site, start)
    with torch.no_grad():
        z = torch.cat([model(batch) for batch in batches])
    items = Items.load(site.items_dir)
    pairs = _pairs(site, items)
    first_item = pairs.drop_duplicates("group_id")
    rng = np.random.default_rng([seed, round_index, _stable(site.name)])
    n = min(bank.share_per_site, len(first_item))
    chosen = first_item.iloc[np.sort(rng.choice(len(first_item), n, replace=False))]
    rows = torch.as_tensor(chosen["item_id"].cat.codes.to_numpy(np.int64))  # items' rows
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    shared = noisy(z[rows], bank.noise_std, generator)
    return shared.numpy().astype(np.float32), chosen["group_id"].to_numpy(np.int64)


def site_model(
    site: LocalSite, state: dict[str, torch.Tensor] | None
) -> tuple[ContrastiveModel, list[Any]]:
    """The site's model in evaluation mode with ``state`` loaded (``None``: round 0, when
    the global model is the seeded initialisation train() builds), and the batches of its
    items' canonical views."""
    experiment = site.experiment
    torch.manual_seed(experiment.training.seed)
    model = build_model(experiment)
    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"site {site.name}")
    items = Items.load(site.items_dir)
    batches = list(builder.embedding_batches(items, experiment.training.batch_size))
    model.eval()
    with torch.no_grad():
        model.embed(batches[0])  # lazy layers learn their input size before weights load
    if state is not None:
        model.load_state_dict(state)
    return model, batches


def _stable(name: str) -> int:
    """A seed from a site name that does not change between processes (unlike hash())."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def _pairs(site: LocalSite, items: Items) -> pd.DataFrame:
    """The site's pairs table, ``item_id`` as codes over ``items``' ids (their rows)."""
    return read_pairs(site.pairs_path, items.table["item_id"])


def _n_groups(site: LocalSite) -> int:
    return int(_pairs(site, Items.load(site.items_dir, columns=[]))["group_id"].nunique())


def _last_epoch_loss(site: LocalSite) -> float:
    lines = (site.state_dir / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in lines if '"kind": "epoch"' in line]
    return float(epochs[-1]["loss"]) if epochs else float("nan")
