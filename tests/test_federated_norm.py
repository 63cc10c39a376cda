"""Federated batch normalisation with the union's statistics (``federated.batch_norm: global``):
the moments a site sends, the server's law of total variance, and sites that train with the
global statistics."""

import numpy as np
import torch
from test_federated import THREE_LABS, make_experiment, write_sites
from test_train import LENGTH
from torch import nn

from scicontrast.data_adapters.base import Items
from scicontrast.experiment import Experiment
from scicontrast.models import federated
from scicontrast.models.contrastive import build_model, load_model
from scicontrast.models.federated_norm import input_moments, mixture_variance
from scicontrast.registry import PAIR_BUILDERS


def test_averaged_moments_give_the_unions_mean_and_variance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    # Two sites of unequal size with different means: the union's variance has a
    # between-site part that averaging the sites' variances would miss.
    a, b = torch.randn(10, 3), torch.randn(30, 3) * 2 + 5
    moments = [input_moments(model, [x]) for x in (a, b[:20], b[20:])]
    weights = np.array([10, 20, 10]) / 40  # FedAvg's weights: items per site
    sites = list(zip(weights, moments, strict=True))
    averaged = {key: sum(w * m[key].numpy() for w, m in sites) for key in moments[0]}
    union = mixture_variance(averaged)
    with torch.no_grad():
        inputs = model[0](torch.cat([a, b])).double()
    np.testing.assert_allclose(union["1.running_mean"], inputs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        union["1.running_var"], inputs.var(0, unbiased=False), rtol=1e-4, atol=1e-6
    )
    within = sum(w * (m["1.running_var"] - m["1.running_mean"] ** 2) for w, m in sites)
    # Plain FedAvg's average of the sites' variances misses the between-site part.
    assert (within.numpy() < union["1.running_var"] - 1e-3).all()


def test_sites_normalise_with_the_global_statistics_while_training():
    experiment = make_experiment(batch_norm="global")
    torch.manual_seed(0)
    model = build_model(Experiment.from_dict(experiment))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    for norm in norms:
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (5, LENGTH)), 4).float().transpose(1, 2)
    model.eval()
    expected = model(x)
    model.train()
    z = model(x)
    torch.testing.assert_close(z, expected)
    z.square().sum().backward()
    assert all(norm.weight.grad.abs().sum() > 0 for norm in norms)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    local = build_model(Experiment.from_dict(make_experiment()))
    local.load_state_dict(before)
    local.train()
    assert not torch.allclose(local(x), expected)  # plain FedAvg uses batch statistics


def count_values(values: dict[str, int], name: str):
    """A hook that records how many values per channel a layer's input holds."""

    def hook(module, args):
        values[name] = args[0].numel() // args[0].shape[1]

    return hook


def test_the_global_models_statistics_are_the_unions(tmp_path):
    """With weights that do not move (a learning rate of 1e-30), the statistics the server
    calibrates from the sites' moments are those batch norm computes in training mode on
    the union's items as one batch: every layer normalised with the union's statistics."""
    items, pairs = write_sites(tmp_path, ["a"] * 3 + ["b"] * 9 + ["c"] * 6)
    experiment = make_experiment(rounds=1, batch_norm="global")
    experiment["training"]["lr"] = 1e-30
    state = load_model(
        federated.federate(Experiment.from_dict(experiment), items, pairs, tmp_path / "fed")
    )[0]
    torch.manual_seed(experiment["training"]["seed"])
    union = build_model(Experiment.from_dict(make_experiment(rounds=1)))  # batch_norm: local
    values = {}
    for name, module in union.named_modules():
        if isinstance(module, nn.BatchNorm1d):
            module.momentum = None  # the running statistics become the batch's
            module.register_forward_pre_hook(count_values(values, name))
    builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
    union.train()
    with torch.no_grad():
        union(next(iter(builder.embedding_batches(Items.load(items), 18))))
    expected, calibrated = union.state_dict(), state.state_dict()
    assert len(values) >= 2
    for name, n in values.items():
        mean, var = f"{name}.running_mean", f"{name}.running_var"
        torch.testing.assert_close(calibrated[mean], expected[mean], rtol=1e-4, atol=1e-5)
        # Batch norm keeps the unbiased variance of the batch.
        torch.testing.assert_close(
            calibrated[var], expected[var] * (n - 1) / n, rtol=1e-4, atol=1e-5
        )


def test_global_batch_norm_runs_with_the_bank_and_resumes(tmp_path):
    items, pairs = write_sites(tmp_path, THREE_LABS)
    bank = {"enabled": True, "size": 10, "share_per_site": 4}
    experiment = make_experiment(bank=bank, batch_norm="global")
    federated.federate(Experiment.from_dict(experiment), items, pairs, tmp_path / "once")
    federated.federate(
        Experiment.from_dict(experiment), items, pairs, tmp_path / "twice", stop_after_rounds=2
    )
    federated.federate(Experiment.from_dict(experiment), items, pairs, tmp_path / "twice")
    once = load_model(tmp_path / "once" / "model.pt")[0].state_dict()
    twice = load_model(tmp_path / "twice" / "model.pt")[0].state_dict()
    for key, value in once.items():
        torch.testing.assert_close(twice[key], value, msg=key)
