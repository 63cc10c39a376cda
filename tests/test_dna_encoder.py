"""The DNA CNN encoder: shapes, and reverse-complement invariance by construction."""

import pytest
import torch

from scicontrast.errors import ConfigError
from scicontrast.models.dna_cnn import DNAConvEncoder, reverse_complement
from scicontrast.registry import ENCODERS


def one_hot(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    bases = torch.randint(0, 4, (batch, length), generator=generator)
    return torch.nn.functional.one_hot(bases, 4).float().transpose(1, 2)


def soft(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Per-position distributions over ACGT (like IUPAC codes or a model's output)."""
    return torch.randn(batch, 4, length, generator=generator).softmax(dim=1)


def small_encoder(**params) -> DNAConvEncoder:
    torch.manual_seed(0)
    return DNAConvEncoder(channels=16, kernel_size=5, layers=3, embedding_dim=12, **params)


def test_reverse_complement_is_the_strand_reversal_of_acgt_one_hot():
    # ACGGT -> reverse complement ACCGT
    x = torch.eye(4)[:, [0, 1, 2, 2, 3]].unsqueeze(0)
    assert torch.equal(reverse_complement(x), torch.eye(4)[:, [0, 1, 1, 2, 3]].unsqueeze(0))
    assert torch.equal(reverse_complement(reverse_complement(x)), x)


@pytest.mark.parametrize("length", [1, 7, 50, 201])
@pytest.mark.parametrize("make_input", [one_hot, soft], ids=["one_hot", "soft"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_rc_invariant_encoder_is_exactly_invariant(length, make_input, training):
    encoder = small_encoder(rc_invariant=True).train(training)
    x = make_input(6, length, torch.Generator().manual_seed(length))
    h = encoder(x)
    h_rc = encoder(reverse_complement(x))
    assert h.shape == (6, 12)
    assert h.abs().max() > 1e-2  # a constant output would be trivially invariant
    torch.testing.assert_close(h_rc, h, rtol=0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean_max", "mean", "max"])
def test_invariance_holds_for_every_pooling(pooling):
    encoder = small_encoder(rc_invariant=True, pooling=pooling).eval()
    x = one_hot(4, 40, torch.Generator().manual_seed(1))
    torch.testing.assert_close(encoder(reverse_complement(x)), encoder(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_plain_encoder_is_not_invariant(training):
    """Without strand pooling nothing makes a random network invariant; training may."""
    encoder = small_encoder(rc_invariant=False).train(training)
    x = one_hot(6, 60, torch.Generator().manual_seed(2))
    difference = (encoder(x) - encoder(reverse_complement(x))).abs().max()
    assert difference > 1e-3


def test_embedding_depends_on_the_sequence():
    encoder = small_encoder().eval()
    generator = torch.Generator().manual_seed(3)
    x, y = one_hot(1, 30, generator), one_hot(1, 30, generator)
    assert (encoder(x) - encoder(y)).abs().max() > 1e-3


def test_output_shape_attribute_and_batch_independence_in_eval_mode():
    encoder = DNAConvEncoder(embedding_dim=32).eval()
    assert encoder.embedding_dim == 32
    x = one_hot(5, 100, torch.Generator().manual_seed(4))
    h = encoder(x)
    assert h.shape == (5, 32)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(encoder(x[2:3]), h[2:3], rtol=0, atol=1e-5)


def test_gradients_reach_every_parameter():
    encoder = small_encoder()
    encoder(one_hot(4, 25, torch.Generator().manual_seed(5))).pow(2).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_registered_as_dna_cnn():
    encoder = ENCODERS.create({"name": "dna_cnn", "params": {"channels": 8, "embedding_dim": 4}})
    assert isinstance(encoder, DNAConvEncoder)
    assert encoder.embedding_dim == 4


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"pooling": "median"}, "pooling"),
        ({"layers": 0}, "layers"),
        ({"channels": 2.5}, "channels"),
    ],
)
def test_bad_params_raise_config_error_naming_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        DNAConvEncoder(**params)


def test_wrong_input_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\[B, 4, L\]"):
        DNAConvEncoder()(torch.zeros(2, 5, 10))
