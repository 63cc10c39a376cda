"""The image CNN: shapes, exact C4 invariance by construction, and bad parameters."""

from __future__ import annotations

import math

import pytest
import torch

from scicontrast.errors import ConfigError
from scicontrast.geometry import disc_mask, rotate
from scicontrast.models.image_cnn import ImageCNN
from scicontrast.registry import ENCODERS

SMALL = {"channels": [8, 16], "embedding_dim": 12}


def disc_images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=generator) * disc_mask(size)


def quarter_turn(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.rot90(x, k, dims=(-2, -1))


def test_registered_under_its_name():
    assert ENCODERS.get("image_cnn") is ImageCNN


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["none", "c4", "c8"])
def test_output_shape_for_grey_and_rgb(channels, mode):
    model = ImageCNN(in_channels=channels, rotation_invariant=mode, **SMALL).eval()
    with torch.no_grad():
        out = model(disc_images(5, channels, 20))
    assert out.shape == (5, 12) and model.embedding_dim == 12
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("pooling", "multiscale", "dim"),
    [("mean", False, 16), ("mean_std", False, 32), ("mean", True, 24), ("mean_std", True, 48)],
)
def test_without_embedding_dim_the_pooled_features_are_the_embedding(pooling, multiscale, dim):
    model = ImageCNN(channels=[8, 16], embedding_dim=None, pooling=pooling, multiscale=multiscale)
    with torch.no_grad():
        out = model.eval()(disc_images(3, 1, 16))
    assert model.embedding_dim == dim and out.shape == (3, dim)
    # Mean-pooled ReLU features are non-negative; standard deviations are positive.
    assert (out >= 0).all()


@pytest.mark.parametrize("mode", ["c4", "c8"])
@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_quarter_turns_embed_identically(mode, train_mode, channels):
    torch.manual_seed(0)
    model = ImageCNN(in_channels=channels, rotation_invariant=mode, **SMALL)
    model.train(train_mode)
    x = disc_images(6, channels, 24)
    with torch.no_grad():
        reference = model(x)
        for k in (1, 2, 3):
            assert torch.allclose(model(quarter_turn(x, k)), reference, atol=1e-5, rtol=0)


def test_c8_is_closer_to_invariant_under_45_degree_turns_than_c4():
    # Stripes under a smooth window: a 45-degree turn makes them diagonal, which the c4
    # orbit never contains but the c8 orbit does, up to interpolation error (the 45-degree
    # copies are interpolated, so c8 is only approximately invariant to them).
    size = 48
    centred = torch.arange(size) + 0.5 - size / 2
    y, x = torch.meshgrid(centred, centred, indexing="ij")
    window = torch.exp(-(x**2 + y**2) / (2 * (size / 6) ** 2))

    def stripes(period: float, phase: float = 0.0) -> torch.Tensor:
        return ((0.5 + 0.5 * torch.sin(2 * math.pi * x / period + phase)) * window)[None, None]

    image, other = stripes(10.0), stripes(7.0, 1.0)
    turned = rotate(image, torch.tensor([45.0])) * disc_mask(size)
    torch.manual_seed(0)
    c8 = ImageCNN(rotation_invariant="c8", **SMALL).eval()
    c4 = ImageCNN(rotation_invariant="c4", **SMALL).eval()
    c4.load_state_dict(c8.state_dict())

    def relative_gap(model: ImageCNN) -> float:
        with torch.no_grad():
            reference = model(image)
            return float((model(turned) - reference).norm() / (model(other) - reference).norm())

    assert relative_gap(c8) < 0.4
    assert relative_gap(c8) < relative_gap(c4) / 2


def test_plain_model_is_not_invariant():
    torch.manual_seed(0)
    model = ImageCNN(rotation_invariant="none", **SMALL).eval()
    x = disc_images(6, 1, 24)
    with torch.no_grad():
        gap = (model(quarter_turn(x, 1)) - model(x)).abs().max()
    assert gap > 1e-3


def test_gradients_reach_every_parameter():
    model = ImageCNN(in_channels=3, rotation_invariant="c4", **SMALL)
    model(disc_images(4, 3, 16)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_wrong_channel_count_names_in_channels():
    model = ImageCNN(in_channels=1, **SMALL)
    with pytest.raises(ValueError, match="in_channels"):
        model(disc_images(2, 3, 16))


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"rotation_invariant": "c6"}, "rotation_invariant"),
        ({"rotation_invariant": True}, "rotation_invariant"),
        ({"in_channels": 0}, "in_channels"),
        ({"channels": []}, "channels"),
        ({"channels": [8, -1]}, "channels"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"pooling": "median"}, "pooling"),
        ({"stem_stride": 0}, "stem_stride"),
    ],
)
def test_bad_params_raise_config_error_naming_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        ImageCNN(**params)
