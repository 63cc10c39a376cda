"""Federated InfoNCE on Flower: equal to central training for one site, the bank's negatives,
sites that drop out, resuming, and sites that cannot train together.

The data is test_train's stand-in: random one-hot prototypes whose views are noisy copies.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_cli
from test_train import LENGTH, NoisyCopies, assert_same_weights, read_metrics

from scicontrast.config import experiment_as_config, select_experiment, validate_config
from scicontrast.data_adapters.base import Adapter, Items
from scicontrast.errors import ConfigError, InputDataError, Preempted, ScicontrastError
from scicontrast.experiment import Experiment
from scicontrast.models import federated
from scicontrast.models.contrastive import build_model
from scicontrast.models.federated_client import site_round
from scicontrast.models.losses import InfoNCELoss
from scicontrast.models.negative_bank import OTHER_SITE, BankedInfoNCELoss, BankStore
from scicontrast.models.train import train


class ToySite(Adapter):
    """A site's own prototypes: ``groups`` sequences of ``length`` bases, of ``modality``."""

    def __init__(self, groups: int = 6, length: int = LENGTH, modality: str = "dna", seed=0):
        self.groups, self.length, self.modality, self.seed = groups, length, modality, seed

    def input_files(self) -> list[Path]:
        return []

    def read(self) -> Items:
        rng = np.random.default_rng(self.seed)
        return Items(
            table=pd.DataFrame({"item_id": [f"s{self.seed}p{i}" for i in range(self.groups)]}),
            meta={"modality": self.modality},
            arrays={"bases": rng.integers(0, 4, (self.groups, self.length))},
        )


def make_experiment(rounds=3, local_epochs=1, bank=None, **federated_settings) -> dict:
    config = {
        "experiments": {
            "toy": {
                "adapter": {"name": "unused_here"},
                "pairs": {"name": "test_train:NoisyCopies"},
                "encoder": {
                    "name": "dna_cnn",
                    "params": {"channels": 8, "kernel_size": 5, "layers": 2, "embedding_dim": 8},
                },
                "head": {"hidden_dim": 16, "output_dim": 8},
                "training": {
                    "epochs": rounds * local_epochs,
                    "batch_size": 3,
                    "lr": 0.01,
                    "device": "cpu",
                },
                "federated": {
                    "split_by": "lab",
                    "rounds": rounds,
                    "local_epochs": local_epochs,
                    "bank": bank or {},
                    **federated_settings,
                },
            }
        }
    }
    return select_experiment(validate_config(config), "toy", "test")


def write_sites(folder: Path, labs: list[str], seed: int = 0) -> tuple[Path, Path]:
    """Items with a ``lab`` column (one site per lab) and their pairs."""
    rng = np.random.default_rng(seed)
    items = Items(
        table=pd.DataFrame({"item_id": [f"p{i}" for i in range(len(labs))], "lab": labs}),
        meta={"modality": "dna"},
        arrays={"bases": rng.integers(0, 4, (len(labs), LENGTH))},
    )
    items.save(folder / "items")
    NoisyCopies().build(items).to_parquet(folder / "pairs.parquet", index=False)
    return folder / "items", folder / "pairs.parquet"


THREE_LABS = ["a"] * 6 + ["b"] * 6 + ["c"] * 6
BANK = {"enabled": True, "size": 10, "share_per_site": 4}


def test_one_site_without_bank_trains_as_central_training_step_for_step(tmp_path):
    items, pairs = write_sites(tmp_path, ["a"] * 8)
    experiment = make_experiment(rounds=3)
    federated.federate(Experiment.from_dict(experiment), items, pairs, tmp_path / "fed")
    central = dict(experiment)
    central.pop("federated")
    train(Experiment.from_dict(central), items, pairs, tmp_path / "central", progress=False)

    def steps(folder):
        records = read_metrics(folder)
        return [(r["step"], r["lr"], r["loss"]) for r in records if r["kind"] == "step"]

    assert steps(tmp_path / "fed" / "sites" / "a" / "model") == steps(tmp_path / "central")
    assert len(steps(tmp_path / "central")) == 3 * 3  # 3 epochs of 8 groups in batches of 3
    assert_same_weights(tmp_path / "fed" / "model.pt", tmp_path / "central" / "model.pt")


def test_the_bank_loss_is_the_in_batch_loss_plus_negatives_never_positives():
    torch.manual_seed(0)
    z, ids = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    banked, plain = BankedInfoNCELoss(5, 4, temperature=0.5), InfoNCELoss(temperature=0.5)
    assert torch.equal(banked(z, ids).loss, plain(z, ids).loss)  # empty bank
    bank = torch.randn(2, 4)
    banked.set_bank(bank, torch.tensor([OTHER_SITE, OTHER_SITE]))
    # Closed form for anchor 0: its positive is view 1; candidates are views 1..5 and the bank.
    zn, bn = torch.nn.functional.normalize(z, dim=1), torch.nn.functional.normalize(bank, dim=1)
    logits = torch.cat([zn[0] @ zn[1:].T, zn[0] @ bn.T]) / 0.5
    expected0 = torch.logsumexp(logits, 0) - logits[0]
    per_anchor = []
    for a in range(6):
        others = [k for k in range(6) if k != a]
        row = torch.cat([zn[a] @ zn[others].T, zn[a] @ bn.T]) / 0.5
        positive = others.index(a ^ 1)
        per_anchor.append(torch.logsumexp(row, 0) - row[positive])
    assert torch.allclose(per_anchor[0], expected0)
    assert torch.allclose(banked(z, ids).loss, torch.stack(per_anchor).mean(), atol=1e-6)


def test_the_bank_never_holds_the_sites_own_current_batch_items_as_candidates():
    torch.manual_seed(1)
    z, ids = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    others = torch.randn(3, 4)
    with_own = BankedInfoNCELoss(8, 4)
    # The site's own earlier projections of groups 0 and 2 (in this batch) and of group 7
    # (not in it), beside other sites' rows.
    own = torch.cat([z[0:1], z[4:5], torch.randn(1, 4)])
    with_own.set_bank(torch.cat([others, own]), torch.tensor([OTHER_SITE] * 3 + [0, 2, 7]))
    without = BankedInfoNCELoss(8, 4)
    without.set_bank(torch.cat([others, own[2:]]), torch.tensor([OTHER_SITE] * 3 + [7]))
    assert torch.allclose(with_own(z, ids).loss, without(z, ids).loss)
    # A bank row identical to an anchor's positive is a negative: the loss only rises.
    copy_of_positive = BankedInfoNCELoss(8, 4)
    copy_of_positive.set_bank(z[1:2], torch.tensor([OTHER_SITE]))
    assert copy_of_positive(z, ids).loss > InfoNCELoss()(z, ids).loss


def test_the_server_bank_keeps_the_newest_rows_and_tags_the_sites_own():
    store = BankStore(size=4, dim=2)
    store.add(np.ones((3, 2)), site=0, groups=np.array([10, 11, 12]))
    store.add(np.zeros((2, 2)), site=1, groups=np.array([20, 21]))
    assert store.groups.tolist() == [11, 12, 20, 21]  # the oldest row went out
    _, ids = store.for_site(1)
    assert ids.tolist() == [OTHER_SITE, OTHER_SITE, 20, 21]


def test_a_site_dropping_out_for_a_round_does_not_stop_the_run(tmp_path, monkeypatch):
    items, pairs = write_sites(tmp_path, THREE_LABS)

    def flaky(site, message):
        if site.name == "b" and int(message.content["config"]["round"]) == 1:
            raise ConnectionError("site b lost its connection")
        return site_round(site, message)

    monkeypatch.setattr(federated, "site_round", flaky)
    experiment = make_experiment(bank=BANK, min_sites=2)
    model = federated.federate(Experiment.from_dict(experiment), items, pairs, tmp_path / "out")
    assert model.exists()
    rounds = [json.loads(line) for line in (tmp_path / "out" / "rounds.jsonl").open()]
    assert [r["sites"] for r in rounds] == [["a", "b", "c"], ["a", "c"], ["a", "b", "c"]]
    assert rounds[1]["failed"] == 1
    # Site b redid nothing and lost nothing: it trained two rounds, two epochs.
    epochs_b = [r for r in read_metrics(tmp_path / "out/sites/b/model") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs_b] == [0, 1]

    strict = make_experiment(bank=BANK, min_sites=3)
    with pytest.raises(ScicontrastError, match="round 1: 2 of 3 sites answered"):
        federated.federate(Experiment.from_dict(strict), items, pairs, tmp_path / "strict")


@pytest.mark.parametrize("interrupt", ["between rounds", "mid-round"])
def test_a_resumed_federated_run_equals_an_uninterrupted_one(
    tmp_path, monkeypatch, caplog, interrupt
):
    items, pairs = write_sites(tmp_path, THREE_LABS)
    experiment = make_experiment(bank=BANK)
    federated.federate(Experiment.from_dict(experiment), items, pairs, tmp_path / "once")
    out = tmp_path / "twice"
    if interrupt == "between rounds":
        federated.federate(Experiment.from_dict(experiment), items, pairs, out, stop_after_rounds=2)
        assert not (out / "model.pt").exists()
    else:

        def preempted(site, message):
            if site.name == "c" and int(message.content["config"]["round"]) == 1:
                raise Preempted("SIGTERM")  # after sites a and b trained round 1
            return site_round(site, message)

        monkeypatch.setattr(federated, "site_round", preempted)
        with pytest.raises(Preempted):
            federated.federate(Experiment.from_dict(experiment), items, pairs, out)
        monkeypatch.setattr(federated, "site_round", site_round)
    caplog.set_level("INFO", logger="scicontrast.federated")
    federated.federate(Experiment.from_dict(experiment), items, pairs, out)
    done = 2 if interrupt == "between rounds" else 1
    assert f"resuming after round {done} of 3" in caplog.text
    assert_same_weights(tmp_path / "once" / "model.pt", out / "model.pt")
    assert (tmp_path / "once" / "rounds.jsonl").read_text().count("\n") == 3
    once = [json.loads(line)["loss"] for line in (tmp_path / "once" / "rounds.jsonl").open()]
    twice = [json.loads(line)["loss"] for line in (out / "rounds.jsonl").open()]
    assert once == twice


def test_the_global_model_never_carries_the_bank(tmp_path):
    items, pairs = write_sites(tmp_path, THREE_LABS)
    path = federated.federate(
        Experiment.from_dict(make_experiment(bank=BANK)), items, pairs, tmp_path / "out"
    )
    state = torch.load(path, weights_only=True)["state_dict"]
    assert int(state["loss.bank_count"]) == 0 and not state["loss.bank"].any()
    server = torch.load(tmp_path / "out" / "server_state.pt", weights_only=False)
    assert len(server["bank"]["groups"]) == BANK["size"]  # 3 sites x 4 rows, newest 10


def test_fedprox_adds_mu_times_the_distance_to_the_global_weights_to_each_gradient():
    experiment = make_experiment(aggregation="fedprox", proximal_mu=0.5)
    torch.manual_seed(0)
    model = build_model(Experiment.from_dict(experiment))
    plain = build_model(
        Experiment.from_dict({k: v for k, v in experiment.items() if k != "federated"})
    )
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "proximal" not in k})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)  # away from the anchors, which hold the starting weights
        for p in plain.parameters():
            p.add_(0.1)
    x, ids = torch.randn(6, 4, LENGTH), torch.tensor([0, 0, 1, 1, 2, 2])
    model.loss(model(x), ids).loss.backward()
    plain.loss(plain(x), ids).loss.backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad + 0.5 * 0.1, atol=1e-6), name


def adapter_sites(**site_b) -> list[dict]:
    toy = "test_federated:ToySite"
    return [
        {"name": "a", "adapter": {"name": toy, "params": {"seed": 0}}},
        {"name": "b", "adapter": {"name": toy, "params": {"seed": 1, **site_b}}},
    ]


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"sites": adapter_sites(modality="image")}, InputDataError, "site 'b': modality 'image'"),
        ({"sites": adapter_sites(length=30)}, InputDataError, r"'b': .*views of shape \[4, 30\]"),
        ({"sites": adapter_sites(groups=2)}, InputDataError, "site 'b': 2 groups, fewer than"),
        ({"bank": {"enabled": True, "size": 0}}, ConfigError, "bank.size is 0 with the bank"),
        ({"split_by": "lab", "rounds": 2}, ConfigError, "training.epochs is 3, but federated"),
    ],
)
def test_bad_sites_and_settings_are_refused_naming_them_and_nothing_is_written(
    tmp_path, settings, error, message
):
    items, pairs = write_sites(tmp_path, THREE_LABS)
    experiment = make_experiment()
    if "sites" in settings:
        settings = {"split_by": None, **settings}
    experiment["federated"].update(settings)
    if "bank" in settings:
        experiment = make_experiment(bank=settings["bank"])
    with pytest.raises(error, match=message):
        federated.federate(Experiment.from_dict(experiment), items, pairs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_federates_and_names_a_bad_site_without_a_traceback(tmp_path):
    items, pairs = write_sites(tmp_path, THREE_LABS)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(experiment_as_config(make_experiment(bank=BANK))))
    args = ["--config", config, "--items", items, "--pairs", pairs]
    result = run_cli("federate", *args, "--out", tmp_path / "model")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / "model.pt").exists()
    small = make_experiment()
    small["training"]["batch_size"] = 7
    config.write_text(yaml.safe_dump(experiment_as_config(small)))
    result = run_cli("federate", *args, "--out", tmp_path / "refused")
    assert result.returncode != 0 and "site 'a': 6 groups, fewer than a batch" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "refused").exists()


def test_fedprox_anchors_each_round_at_the_global_weights_it_started_from(tmp_path):
    items, pairs = write_sites(tmp_path, THREE_LABS)
    experiment = make_experiment(aggregation="fedprox", proximal_mu=0.1)
    out = tmp_path / "out"
    federated.federate(Experiment.from_dict(experiment), items, pairs, out, stop_after_rounds=1)
    global_after_round_0 = torch.load(out / "server_state.pt", weights_only=False)["arrays"]
    federated.federate(Experiment.from_dict(experiment), items, pairs, out, stop_after_rounds=2)
    site = torch.load(out / "sites" / "b" / "model" / "checkpoint.pt", weights_only=True)
    anchors = {k: v for k, v in site["model"].items() if k.startswith("proximal.")}
    assert len(anchors) == sum(
        p.requires_grad for p in build_model(Experiment.from_dict(experiment)).parameters()
    )
    for key, anchor in anchors.items():
        name = key.removeprefix("proximal.").replace("__", ".")
        assert torch.equal(anchor, torch.from_numpy(global_after_round_0[name])), name


def test_the_typed_experiment_carries_the_federated_section():
    from conftest import REPO

    from scicontrast.config import load_experiment
    from scicontrast.experiment import Experiment

    path = REPO / "benchmarks" / "federated.yaml"
    typed = Experiment.from_dict(load_experiment(path, "neu_federated"))
    assert typed.federated is not None and typed.federated.bank.size == 1440
    assert typed.federated.split_by == "label" and typed.federated.rounds == 10
