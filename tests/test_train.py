"""The training loop, checkpoints, resuming, and the model file.

The data here is a stand-in that needs no other part of the project: each item is a random
one-hot "prototype" sequence and its views are copies of it with a few bases mutated, so a
model that learns to tell the prototypes apart drives the loss down.
"""

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from scicontrast.config import select_experiment, validate_config
from scicontrast.data_adapters.base import Items, PairBuilder, ViewDataset, collate_views
from scicontrast.device import resolve_device
from scicontrast.errors import ConfigError, InputDataError, ScicontrastError
from scicontrast.experiment import Component, Experiment
from scicontrast.models.contrastive import (
    FORMAT_VERSION,
    ContrastiveModel,
    build_model,
    load_model,
    save_model,
)
from scicontrast.models.dna_cnn import DNAConvEncoder
from scicontrast.models.run_state import experiment_hash
from scicontrast.models.train import learning_rate, train
from scicontrast.registry import PAIR_BUILDERS

LENGTH = 24


class NoisyCopies(PairBuilder):
    """Views of an item are copies of its one-hot sequence with ``mutation_rate`` of the
    positions redrawn at random."""

    def __init__(self, views_per_item: int = 2, mutation_rate: float = 0.1) -> None:
        self.views_per_item = views_per_item
        self.mutation_rate = mutation_rate

    def build(self, items: Items) -> pd.DataFrame:
        ids = items.table["item_id"].to_numpy()
        return pd.DataFrame(
            {
                "group_id": np.repeat(np.arange(len(ids)), self.views_per_item),
                "item_id": np.repeat(ids, self.views_per_item),
                "view": "noisy",
            }
        )

    def bind(self, items: Items) -> None:
        self.bases = items.arrays["bases"]

    def make_view(self, item_index, view, rng):
        bases = self.bases[item_index].copy()
        if rng is not None:
            mutated = rng.random(len(bases)) < self.mutation_rate
            bases[mutated] = rng.integers(0, 4, int(mutated.sum()))
        return torch.nn.functional.one_hot(torch.from_numpy(bases), 4).float().T


class RecordingNoisyCopies(NoisyCopies):
    """``NoisyCopies`` that keeps every view it makes, to see what training was shown."""

    made: ClassVar[list[torch.Tensor]] = []

    def make_view(self, item_index, view, rng):
        x = super().make_view(item_index, view, rng)
        self.made.append(x)
        return x


class InfiniteStatistics(DNAConvEncoder):
    """A DNA encoder whose training forward leaves an infinite buffer but a finite output,
    as batch norm does after a too-large step: the loss alone cannot see it."""

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.register_buffer("running_scale", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.running_scale.fill_(float("inf"))
        return super().forward(x)


def make_experiment(**training) -> Experiment:
    config = {
        "experiments": {
            "toy": {
                "adapter": {"name": "unused_here"},
                "pairs": {"name": f"{__name__}:NoisyCopies"},
                "encoder": {
                    "name": "dna_cnn",
                    "params": {"channels": 8, "kernel_size": 5, "layers": 2, "embedding_dim": 8},
                },
                "head": {"hidden_dim": 16, "output_dim": 8},
                "training": {"epochs": 3, "batch_size": 3, "lr": 0.01, "device": "cpu", **training},
            }
        }
    }
    return Experiment.from_dict(select_experiment(validate_config(config), "toy", "test"))


def write_toy_data(folder: Path, groups: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    items = Items(
        table=pd.DataFrame({"item_id": [f"proto{i}" for i in range(groups)]}),
        arrays={"bases": rng.integers(0, 4, (groups, LENGTH))},
    )
    items.save(folder / "items")
    NoisyCopies().build(items).to_parquet(folder / "pairs.parquet", index=False)
    return folder / "items", folder / "pairs.parquet"


@pytest.fixture
def toy_data(tmp_path) -> tuple[Path, Path]:
    return write_toy_data(tmp_path, groups=8)


def read_metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def epoch_lines(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "epoch"]


def assert_same_weights(path_a: Path, path_b: Path) -> None:
    a = torch.load(path_a, weights_only=True)["state_dict"]
    b = torch.load(path_b, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def without_timings(records: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("seconds", "samples_per_second", "peak_memory_mb")}
        for r in records
    ]


@pytest.mark.parametrize(
    "settings",
    [
        {"holdout_fraction": 0.0},
        {"holdout_fraction": 0.25},
        {"lr_schedule": "cosine", "warmup_epochs": 1},
        {"swa_epochs": 2},
    ],
)
def test_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path, toy_data, settings):
    experiment = make_experiment(epochs=3, **settings)
    full = train(experiment, *toy_data, tmp_path / "full", progress=False)

    pieces = tmp_path / "pieces"
    model_path = train(experiment, *toy_data, pieces, progress=False, stop_after_epochs=1)
    assert not model_path.exists()
    # Preempted during epoch 1: its step lines, and half a line, were already written.
    with open(pieces / "metrics.jsonl", "a") as metrics:
        metrics.write(json.dumps({"kind": "step", "epoch": 1, "step": 4, "loss": 9.9}) + "\n")
        metrics.write('{"kind": "step", "epo')
    resumed = train(experiment, *toy_data, pieces, progress=False)

    assert_same_weights(full, resumed)
    full_records, resumed_records = read_metrics(full.parent), read_metrics(pieces)
    assert [r["epoch"] for r in epoch_lines(resumed_records)] == [0, 1, 2]
    assert without_timings(resumed_records) == without_timings(full_records)


def test_held_out_groups_are_tracked_every_epoch_as_the_diagnostics_compute_them(
    tmp_path, toy_data
):
    from scicontrast.analysis.diagnostics import diagnose

    # heldout_min_steps=1: a pass after each two-step epoch.
    experiment = make_experiment(epochs=3, holdout_fraction=0.25, heldout_min_steps=1)
    model_path = train(experiment, *toy_data, tmp_path / "run", progress=False)
    held_out = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "heldout"]
    assert [r["epoch"] for r in held_out] == [0, 1, 2]
    assert len({r["projection"]["loss"] for r in held_out}) == 3  # the model changes
    # 8 groups, 2 held out: one batch of 2 groups, each with 2 views -> 2 negatives per anchor.
    assert held_out[-1]["projection"]["num_negatives"] == 2

    diagnostics = diagnose(model_path, *toy_data, tmp_path / "diagnostics", device="cpu")
    assert diagnostics["subset"]["held_out_from_training"] is True
    for space in ("projection", "embedding"):
        for key, value in diagnostics["trained"][space].items():
            assert held_out[-1][space][key] == pytest.approx(value, abs=1e-6), (space, key)


def test_training_in_three_pieces_checkpoints_atomically_after_each_epoch(tmp_path, toy_data):
    experiment = make_experiment(epochs=3)
    out = tmp_path / "run"
    for epochs_done in (1, 2, 3):
        train(experiment, *toy_data, out, progress=False, stop_after_epochs=epochs_done)
        expected = {"checkpoint.pt", "metrics.jsonl"} | (
            {"model.pt"} if epochs_done == 3 else set()
        )
        assert {p.name for p in out.iterdir()} == expected  # no temporary files left behind
        checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
        assert checkpoint["epochs_done"] == epochs_done
        assert checkpoint["global_step"] == 3 * epochs_done  # 8 groups in batches of 3
        assert [r["epoch"] for r in epoch_lines(read_metrics(out))] == list(range(epochs_done))
    assert_same_weights(
        out / "model.pt", train(experiment, *toy_data, tmp_path / "full", progress=False)
    )


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint(tmp_path, toy_data, monkeypatch):
    experiment = make_experiment(epochs=3)
    out = tmp_path / "run"
    train(experiment, *toy_data, out, progress=False, stop_after_epochs=1)
    before = (out / "checkpoint.pt").read_bytes()

    def crash_while_writing(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_while_writing)
    with pytest.raises(OSError, match="disk full"):
        train(experiment, *toy_data, out, progress=False)
    monkeypatch.undo()

    assert (out / "checkpoint.pt").read_bytes() == before
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "metrics.jsonl"}
    resumed = train(experiment, *toy_data, out, progress=False)
    assert_same_weights(resumed, train(experiment, *toy_data, tmp_path / "full", progress=False))


def batchnorm_input_means(model: ContrastiveModel, batches) -> dict[str, torch.Tensor]:
    """Each batch-norm layer's per-channel input mean, averaged over ``batches`` equally."""
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    }
    means = {name: [] for name in layers}
    hooks = [
        module.register_forward_hook(
            lambda module, inputs, output, name=name: means[name].append(
                inputs[0].transpose(0, 1).flatten(1).mean(dim=1)
            )
        )
        for name, module in layers.items()
    ]
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch.inputs)
    for hook in hooks:
        hook.remove()
    return {name: torch.stack(values).mean(dim=0) for name, values in means.items()}


def test_weight_averaging_exports_the_mean_of_the_last_epochs_with_fresh_batchnorm_statistics(
    tmp_path, toy_data
):
    experiment = make_experiment(epochs=4, swa_epochs=2)
    out = tmp_path / "run"
    last_weights = []
    for epochs_done in (1, 2, 3, 4):
        train(experiment, *toy_data, out, progress=False, stop_after_epochs=epochs_done)
        last_weights.append(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
    exported = torch.load(out / "model.pt", weights_only=True)["state_dict"]

    parameters = dict(build_model(experiment).named_parameters())
    assert any(name.endswith("running_mean") for name in exported)  # dna_cnn has batch norm
    for name in parameters:
        mean = (last_weights[2][name] + last_weights[3][name]) / 2
        assert torch.allclose(exported[name], mean, atol=1e-7), name
        assert not torch.allclose(exported[name], last_weights[3][name]), name

    # Batch-norm statistics: those of the averaged weights over one further epoch's views
    # (epoch 4), not the last weights' running estimates.
    averaged, _ = load_model(out / "model.pt")
    settings = experiment.training
    batches = PAIR_BUILDERS.create(experiment.pairs).training_batches(
        Items.load(toy_data[0]), pd.read_parquet(toy_data[1]), settings.seed, settings.batch_size
    )
    batches.set_epoch(4)
    for name, mean in batchnorm_input_means(averaged, batches).items():
        assert torch.allclose(exported[f"{name}.running_mean"], mean, atol=1e-6), name
        assert not torch.allclose(last_weights[3][f"{name}.running_mean"], mean, atol=1e-3), name


def test_more_epochs_to_average_than_epochs_is_refused_naming_the_key(tmp_path, toy_data):
    with pytest.raises(ConfigError, match=r"toy\.training\.swa_epochs: 4 epochs"):
        train(make_experiment(epochs=3, swa_epochs=4), *toy_data, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_ensemble_is_the_single_runs_of_its_seeds_side_by_side(tmp_path, toy_data):
    ensemble_path = train(make_experiment(epochs=2, ensemble=2), *toy_data, tmp_path / "ensemble")
    singles = [
        train(make_experiment(epochs=2, seed=seed), *toy_data, tmp_path / f"seed{seed}")
        for seed in (0, 1)
    ]
    for k, single in enumerate(singles):
        assert_same_weights(ensemble_path.parent / "members" / str(k) / "model.pt", single)

    ensemble, _ = load_model(ensemble_path)
    members = [load_model(single)[0] for single in singles]
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (5, LENGTH)), 4).float().transpose(1, 2)
    with torch.no_grad():
        assert torch.equal(ensemble.embed(x), torch.cat([m.embed(x) for m in members], dim=1))
        # Cosine similarity of the joint projections: the members' mean.
        z = ensemble(x)
        projections = [torch.nn.functional.normalize(m(x), dim=1) for m in members]
    member_cosines = torch.stack([p @ p.T for p in projections])
    assert torch.allclose(z @ z.T, member_cosines.mean(dim=0), atol=1e-6)
    assert ensemble.encoder.embedding_dim == 2 * members[0].encoder.embedding_dim

    records = read_metrics(ensemble_path.parent)
    for k, single in enumerate(singles):
        tagged = [{**r, "member": k} for r in without_timings(read_metrics(single.parent))]
        assert [r for r in without_timings(records) if r["member"] == k] == tagged


def test_training_cost_of_an_ensemble_counts_one_members_epochs_and_every_members_seconds(
    tmp_path,
):
    from scicontrast.analysis.graph_eval import training_cost

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(
            json.dumps(
                {"member": k, "kind": kind, "epoch": e, "seconds": 1.0 + k, "peak_memory_mb": 9}
            )
            + "\n"
            for k in (0, 1)
            for e in (0, 1, 2)
            for kind in ("step", "epoch")
        )
    )
    cost = training_cost(metrics)
    assert (cost["epochs"], cost["members"]) == (3, 2)
    assert cost["seconds_total"] == 3 * 1.0 + 3 * 2.0


def test_an_interrupted_ensemble_resumes_to_the_uninterrupted_one(tmp_path, toy_data):
    experiment = make_experiment(epochs=2, ensemble=2)
    full = train(experiment, *toy_data, tmp_path / "full", progress=False)

    pieces = tmp_path / "pieces"
    stopped = train(experiment, *toy_data, pieces, progress=False, stop_after_epochs=1)
    assert not stopped.exists()
    assert (pieces / "members" / "0" / "checkpoint.pt").exists()
    assert not (pieces / "members" / "1").exists()
    resumed = train(experiment, *toy_data, pieces, progress=False)

    assert_same_weights(full, resumed)
    assert without_timings(read_metrics(pieces)) == without_timings(read_metrics(full.parent))


def test_changed_config_starts_fresh_with_a_warning(tmp_path, toy_data, caplog):
    out = tmp_path / "run"
    train(make_experiment(epochs=3), *toy_data, out, progress=False, stop_after_epochs=2)
    changed = make_experiment(epochs=3, lr=0.005)
    with caplog.at_level(logging.WARNING, logger="scicontrast.train"):
        restarted = train(changed, *toy_data, out, progress=False)
    assert "different experiment config" in caplog.text
    assert [r["epoch"] for r in epoch_lines(read_metrics(out))] == [0, 1, 2]
    assert_same_weights(restarted, train(changed, *toy_data, tmp_path / "fresh", progress=False))


def test_config_hash_ignores_analysis_description_and_loader_workers_only():
    experiment = make_experiment()
    relabelled = experiment.replace(analysis={"knn_k": 3}, description="new words")
    assert experiment_hash(relabelled) == experiment_hash(experiment)
    assert experiment_hash(make_experiment(loader_workers=3)) == experiment_hash(experiment)
    assert experiment_hash(make_experiment(seed=1)) != experiment_hash(experiment)


def test_resume_off_ignores_the_checkpoint(tmp_path, toy_data):
    experiment = make_experiment(epochs=2)
    out = tmp_path / "run"
    train(experiment, *toy_data, out, progress=False, stop_after_epochs=1)
    train(experiment, *toy_data, out, progress=False, resume=False)
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "step"] == list(range(1, 7))


def fixed_batch_loss(model: ContrastiveModel, items_dir: Path, pairs_path: Path) -> float:
    """The loss over the same views of every group, with batch statistics."""
    items, pairs = Items.load(items_dir), pd.read_parquet(pairs_path)
    dataset = ViewDataset(items, pairs, NoisyCopies(), seed=123)
    batch = collate_views([dataset[i] for i in range(len(dataset))])
    model.train()
    with torch.no_grad():
        return model.loss(model(batch.inputs), batch.group_ids).loss.item()


def test_loss_decreases_on_noisy_copies_of_prototypes(tmp_path, toy_data, caplog):
    experiment = make_experiment(epochs=16, batch_size=4)
    torch.manual_seed(experiment.training.seed)
    initial = build_model(experiment)  # the weights training starts from
    with caplog.at_level(logging.INFO, logger="scicontrast.train"):
        trained, _ = load_model(train(experiment, *toy_data, tmp_path / "run", progress=False))
    assert fixed_batch_loss(trained, *toy_data) < 0.7 * fixed_batch_loss(initial, *toy_data)
    assert "8 groups" in caplog.text and "final loss" in caplog.text
    assert not torch.are_deterministic_algorithms_enabled()  # global setting restored


def test_every_epoch_draws_fresh_views(tmp_path, toy_data, monkeypatch):
    monkeypatch.setattr(RecordingNoisyCopies, "made", [])
    recording = Component(f"{__name__}:RecordingNoisyCopies", {})
    experiment = dataclasses.replace(make_experiment(epochs=2), pairs=recording)
    train(experiment, *toy_data, tmp_path / "run", progress=False)
    made = [x.numpy().tobytes() for x in RecordingNoisyCopies.made]
    assert len(made) == 2 * 16  # 8 groups of 2 views, per epoch
    assert set(made[:16]) != set(made[16:])


def test_last_batch_of_a_single_group_is_dropped(tmp_path):
    items, pairs = write_toy_data(tmp_path, groups=7)
    train(make_experiment(epochs=2), items, pairs, tmp_path / "run", progress=False)
    steps = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "step"]
    assert len(steps) == 4  # 7 groups in batches of 3: 3 + 3 per epoch, the single one dropped
    assert all(r["anchors_without_positive"] == 0 for r in steps)


def test_epoch_line_summarises_its_steps(tmp_path, toy_data):
    train(make_experiment(epochs=1), *toy_data, tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run")
    steps, (epoch,) = records[:-1], epoch_lines(records)
    assert [r["kind"] for r in steps] == ["step"] * 3
    assert all(r["lr"] == 0.01 for r in steps)
    assert epoch["loss"] == pytest.approx(np.mean([r["loss"] for r in steps]))
    assert epoch["samples_per_second"] > 0 and epoch["seconds"] > 0


def test_learning_rate_warms_up_linearly_then_follows_half_a_cosine():
    steps = [learning_rate(0.1, s, 10, 2, "cosine") for s in range(10)]
    expected = [0.05, 0.1] + [0.05 * (1 + np.cos(np.pi * k / 8)) for k in range(8)]
    assert steps == pytest.approx(expected, abs=1e-15)
    assert [learning_rate(0.1, s, 10, 2, "constant") for s in range(4)] == [0.05, 0.1, 0.1, 0.1]
    assert learning_rate(0.1, 0, 10, 0, "cosine") == 0.1
    with pytest.raises(ConfigError, match="lr_schedule"):
        learning_rate(0.1, 5, 10, 0, "step")


def test_every_step_trains_at_its_scheduled_learning_rate(tmp_path, toy_data, monkeypatch):
    used = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        assert all(group["lr"] == used[-1] for group in self.param_groups)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    experiment = make_experiment(epochs=3, lr_schedule="cosine", warmup_epochs=0.5)
    train(experiment, *toy_data, tmp_path / "run", progress=False)
    # 8 groups in batches of 3: 3 steps per epoch, 9 in all, the first 2 (round(1.5)) warm up.
    expected = [learning_rate(0.01, s, 9, 2, "cosine") for s in range(9)]
    assert used == expected
    logged = [r["lr"] for r in read_metrics(tmp_path / "run") if r["kind"] == "step"]
    assert logged == expected
    assert expected[0] == 0.005 and expected[1] == 0.01 and 0 < expected[-1] < 0.001


def test_a_single_group_is_rejected(tmp_path):
    items, pairs = write_toy_data(tmp_path, groups=1)
    with pytest.raises(InputDataError, match=re.escape(str(pairs))):
        train(make_experiment(), items, pairs, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_missing_pairs_table_names_the_file(tmp_path, toy_data):
    items, _ = toy_data
    with pytest.raises(InputDataError, match=re.escape(str(tmp_path / "nowhere.parquet"))):
        train(make_experiment(), items, tmp_path / "nowhere.parquet", tmp_path / "run")


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"training\.device"):
        resolve_device("cuda")


def test_save_and_load_model_give_identical_embeddings(tmp_path):
    experiment = make_experiment()
    torch.manual_seed(0)
    model = build_model(experiment)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (6, LENGTH)), 4).float().transpose(1, 2)
    model(x)  # training-mode pass: BatchNorm running statistics now differ from their init
    model.eval()
    save_model(tmp_path / "model.pt", model, experiment)
    loaded, stored_experiment = load_model(tmp_path / "model.pt")
    assert isinstance(loaded, ContrastiveModel) and not loaded.training
    assert stored_experiment == experiment
    assert torch.equal(loaded.embed(x), model.embed(x))
    assert loaded.embed(x).shape == (6, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_model_file_from_before_a_new_setting_loads_with_its_default(tmp_path):
    experiment = make_experiment()
    model = build_model(experiment)
    older = {**experiment.to_dict(), "loss": {"temperature": 0.2}}  # before loss.implementation
    file = {"format_version": FORMAT_VERSION, "experiment": older, "state_dict": model.state_dict()}
    torch.save(file, tmp_path / "model.pt")
    _, stored_experiment = load_model(tmp_path / "model.pt")
    assert stored_experiment.loss.implementation == "dense"
    assert stored_experiment.loss.temperature == 0.2


def test_learnable_temperature_is_trained_and_saved(tmp_path, toy_data):
    experiment = make_experiment(epochs=2).replace(loss={"learnable_temperature": True})
    model, _ = load_model(train(experiment, *toy_data, tmp_path / "run", progress=False))
    assert model.loss.temperature().item() != pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("content", [b"not a torch file", None], ids=["corrupt", "not_a_model"])
def test_load_model_rejects_a_bad_file_naming_it(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(InputDataError, match=re.escape(str(path))):
        load_model(path)


def test_load_model_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(InputDataError, match=re.escape(str(tmp_path / "absent.pt"))):
        load_model(tmp_path / "absent.pt")


def test_progress_leaves_one_console_line_per_epoch_with_mean_loss_and_seconds(
    tmp_path, toy_data, capsys
):
    train(make_experiment(epochs=2), *toy_data, tmp_path / "run", progress=True)
    console = capsys.readouterr().err
    for epoch in epoch_lines(read_metrics(tmp_path / "run")):
        # tqdm's final line of the epoch: steps done, elapsed time, the epoch's mean loss.
        line = re.search(rf"epoch {epoch['epoch'] + 1}/2: 100%.*?3/3 \[\d\d:\d\d<.*?\]", console)
        assert line is not None, console
        assert f"loss={epoch['loss']:.4f}" in line.group(0)


def test_a_non_finite_buffer_stops_training_like_a_nan_loss(tmp_path, toy_data):
    infinite = dataclasses.replace(make_experiment().encoder, name=f"{__name__}:InfiniteStatistics")
    experiment = dataclasses.replace(make_experiment(epochs=2), encoder=infinite)
    with pytest.raises(
        ScicontrastError,
        # Weights and buffers are checked at the end of the epoch (3 steps), before the
        # held-out pass and any checkpoint.
        match=r"training diverged: encoder\.running_scale holds NaN or infinite values at "
        r"epoch 0, step 3; lower training\.lr",
    ):
        train(experiment, *toy_data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("lr", [1.0e6, 1.0e38])
def test_an_absurd_learning_rate_ends_in_a_clear_error_and_no_model(tmp_path, toy_data, lr):
    """lr 1e6 leaves infinite weights or statistics; lr 1e38 overflows AdamW's step size."""
    with pytest.raises(ScicontrastError, match=r"training diverged|training\.lr: 1e\+38"):
        train(make_experiment(lr=lr), *toy_data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()
