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
    return DNAConvEncoder(
        **{"channels": 16, "kernel_size": 5, "layers": 3, "embedding_dim": 12, **params}
    )


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
    # In training mode BatchNorm sums its batch statistics over the strands in the other
    # order for the reverse complement, so the two agree to float32 rounding of values of
    # order 1 (a few ulp), which an absolute 1e-6 alone can miss by one ulp.
    torch.testing.assert_close(h_rc, h, rtol=1e-6 if training else 0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean_max", "mean", "max"])
def test_invariance_holds_for_every_pooling(pooling):
    encoder = small_encoder(rc_invariant=True, pooling=pooling).eval()
    x = one_hot(4, 40, torch.Generator().manual_seed(1))
    torch.testing.assert_close(encoder(reverse_complement(x)), encoder(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("length", [3, 50, 81, 251])
@pytest.mark.parametrize("position_bins", [2, 5, 8])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_rc_invariance_is_exact_with_position_bins(length, position_bins, training):
    """Bins of each strand counted from its own 5' end keep h(rc x) = h(x) term by term,
    also when the length is not a multiple of the bin count, or shorter than it."""
    encoder = small_encoder(rc_invariant=True, position_bins=position_bins).train(training)
    x = soft(5, length, torch.Generator().manual_seed(length + position_bins))
    h = encoder(x)
    assert h.abs().max() > 1e-2
    torch.testing.assert_close(encoder(reverse_complement(x)), h, rtol=0, atol=1e-6)


def test_one_position_bin_is_global_pooling():
    encoder = small_encoder(rc_invariant=False, position_bins=1).eval()
    x = one_hot(3, 45, torch.Generator().manual_seed(6))
    features = encoder.blocks(encoder.stem(x))
    pooled = torch.cat([features.mean(dim=-1), features.amax(dim=-1)], dim=-1)
    torch.testing.assert_close(encoder(x), encoder.output(pooled), rtol=0, atol=0)


@pytest.mark.parametrize("pooling", ["mean_max", "mean", "max"])
def test_position_bins_multiply_the_pooled_width(pooling):
    encoder = DNAConvEncoder(channels=8, position_bins=4, pooling=pooling, embedding_dim=5)
    assert encoder.output.in_features == (2 if pooling == "mean_max" else 1) * 8 * 4
    assert encoder(one_hot(2, 30, torch.Generator().manual_seed(7))).shape == (2, 5)


def test_position_bins_tell_where_a_segment_sits():
    """Swapping the two halves of a sequence barely moves a globally mean-pooled embedding
    (only the junction and the ends change), but moves a two-bin one a lot."""
    generator = torch.Generator().manual_seed(8)
    first, second = one_hot(1, 200, generator), one_hot(1, 200, generator)
    x, swapped = torch.cat([first, second], dim=-1), torch.cat([second, first], dim=-1)

    @torch.no_grad()
    def moved(position_bins: int) -> float:
        torch.manual_seed(0)
        encoder = DNAConvEncoder(
            channels=16, kernel_size=5, layers=1, pooling="mean", position_bins=position_bins
        ).eval()
        return float((encoder(x) - encoder(swapped)).norm() / encoder(x).norm())

    assert moved(2) > 10 * moved(1)


@pytest.mark.parametrize("rc_invariant", [True, False])
def test_without_output_layer_the_embedding_is_the_pooled_features(rc_invariant):
    encoder = small_encoder(rc_invariant=rc_invariant, embedding_dim=None, position_bins=3).eval()
    assert encoder.embedding_dim == 2 * 16 * 3
    assert not list(encoder.output.parameters())
    x = soft(4, 61, torch.Generator().manual_seed(9))
    pooled = encoder._trunk(x)
    if rc_invariant:
        pooled = pooled + encoder._trunk(reverse_complement(x))
        torch.testing.assert_close(encoder(reverse_complement(x)), encoder(x), rtol=0, atol=1e-6)
    assert encoder(x).shape == (4, encoder.embedding_dim)
    torch.testing.assert_close(encoder(x), pooled, rtol=0, atol=1e-6)


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
        ({"position_bins": 0}, "position_bins"),
        ({"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_bad_params_raise_config_error_naming_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        DNAConvEncoder(**params)


def test_wrong_input_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\[B, 4, L\]"):
        DNAConvEncoder()(torch.zeros(2, 5, 10))
