"""Loss forms chosen in the config: chunked InfoNCE, gradient caching and a MoCo key queue.

Each is tested in the training loop against the plain form it replaces; the modules
themselves are tested in test_chunked_loss.py, test_grad_cache.py and test_moco.py.
"""

import pytest
import torch
from test_train import assert_same_weights, make_experiment, write_toy_data

from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment
from scicontrast.models.chunked_loss import ChunkedInfoNCELoss
from scicontrast.models.contrastive import build_model, load_model
from scicontrast.models.losses import InfoNCELoss
from scicontrast.models.train import train


@pytest.fixture
def toy_data(tmp_path):
    return write_toy_data(tmp_path, groups=8)


def with_loss(experiment: Experiment, **loss) -> Experiment:
    return experiment.replace(loss=loss)


def state_dict(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# The head's BatchNorm subtracts the batch mean of Linear(h), so the encoder's output bias
# gets a gradient that is zero up to rounding; Adam scales that rounding noise to full
# steps, so the bias (and the batch-norm running mean it shifts) differs between numerically
# equal losses. Every other weight must agree.
LOSS_BLIND = ("encoder.output.bias", "head.layers.1.running_mean")


def test_chunked_implementation_trains_like_the_dense_loss(tmp_path, toy_data):
    dense = make_experiment(epochs=2)
    chunked = with_loss(dense, implementation="chunked")
    assert isinstance(build_model(chunked).loss, ChunkedInfoNCELoss)
    assert type(build_model(dense).loss) is InfoNCELoss
    a = state_dict(train(dense, *toy_data, tmp_path / "dense", progress=False))
    b = state_dict(train(chunked, *toy_data, tmp_path / "chunked", progress=False))
    for key in set(a) - set(LOSS_BLIND):
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_grad_cache_with_one_chunk_equals_plain_training(tmp_path, toy_data):
    # 3 groups x 2 views per batch: one chunk of 6 views is the whole batch, so the cached
    # gradients must be those of the plain pass (batch-norm statistics see the same rows).
    plain = make_experiment(epochs=2)
    cached = make_experiment(epochs=2, grad_cache_views=6)
    a = state_dict(train(plain, *toy_data, tmp_path / "plain", progress=False))
    b = state_dict(train(cached, *toy_data, tmp_path / "cached", progress=False))
    for key in set(a) - set(LOSS_BLIND):
        if "running" in key or "num_batches_tracked" in key:
            continue  # the graph-free first pass updates batch-norm statistics once more
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_grad_cache_in_small_chunks_trains_and_resumes_exactly(tmp_path, toy_data):
    experiment = make_experiment(epochs=2, grad_cache_views=2)
    full = train(experiment, *toy_data, tmp_path / "full", progress=False)
    train(experiment, *toy_data, tmp_path / "pieces", progress=False, stop_after_epochs=1)
    resumed = train(experiment, *toy_data, tmp_path / "pieces", progress=False)
    assert_same_weights(full, resumed)
    plain = train(make_experiment(epochs=2), *toy_data, tmp_path / "plain", progress=False)
    # Chunks of 2 views normalise their batch statistics differently: not the plain run.
    assert not torch.equal(
        state_dict(full)["encoder.output.weight"], state_dict(plain)["encoder.output.weight"]
    )


def test_moco_queue_fills_restores_and_resumes_exactly(tmp_path, toy_data):
    experiment = with_loss(make_experiment(epochs=3), queue_size=10, momentum=0.9)
    full = train(experiment, *toy_data, tmp_path / "full", progress=False)
    model, _ = load_model(full)
    # 3 epochs x 16 views went through a queue of 10.
    assert len(model.key_queue) == 10
    # The momentum encoder lags behind the online one but is a copy of its structure.
    online = dict(model.encoder.named_parameters())
    lagging = dict(model.momentum_encoder.encoder.encoder.named_parameters())
    assert online.keys() == lagging.keys()
    assert any(not torch.equal(online[k], lagging[k]) for k in online)

    train(experiment, *toy_data, tmp_path / "pieces", progress=False, stop_after_epochs=1)
    resumed = train(experiment, *toy_data, tmp_path / "pieces", progress=False)
    assert_same_weights(full, resumed)  # queue and momentum weights included


def test_moco_with_momentum_zero_keeps_the_key_encoder_equal_to_the_online_one(tmp_path, toy_data):
    experiment = with_loss(make_experiment(epochs=1), queue_size=4, momentum=0.0)
    model, _ = load_model(train(experiment, *toy_data, tmp_path / "run", progress=False))
    online = dict(model.encoder.named_parameters())
    for name, key in model.momentum_encoder.encoder.encoder.named_parameters():
        assert torch.equal(key, online[name]), name


def test_grad_cache_and_moco_together_are_refused(tmp_path, toy_data):
    experiment = with_loss(make_experiment(epochs=1, grad_cache_views=2), queue_size=4)
    with pytest.raises(ConfigError, match=r"grad_cache_views.*queue_size"):
        train(experiment, *toy_data, tmp_path / "run", progress=False)
