"""Longer-context DNA encoders for reads (issue 25 item 3): the attention encoder's strand and
padding invariances and shapes, and the receptive field of the dilated CNN configuration."""

import pytest
import torch

from scicontrast.config import load_experiment
from scicontrast.errors import ConfigError
from scicontrast.models.dna_attention import DNAConvAttentionEncoder, left_aligned_strands
from scicontrast.models.dna_cnn import DNAConvEncoder, reverse_complement
from scicontrast.registry import ENCODERS


def one_hot(batch: int, length: int, seed: int) -> torch.Tensor:
    bases = torch.randint(0, 4, (batch, length), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(bases, 4).float().transpose(1, 2)


def pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (left, right))


def small_encoder() -> DNAConvAttentionEncoder:
    torch.manual_seed(0)
    return DNAConvAttentionEncoder(
        channels=8, kernel_size=5, token_size=4, model_dim=16, heads=2, embedding_dim=12
    )


def test_left_aligned_strands_move_the_padding_right():
    # ACGGT with 2 columns of padding on the left and 3 on the right.
    read = torch.eye(4)[:, [0, 1, 2, 2, 3]].unsqueeze(0)
    forward, reverse, mask = left_aligned_strands(pad(read, 2, 3))
    assert torch.equal(forward, pad(read, 0, 5))
    assert torch.equal(reverse, pad(reverse_complement(read), 0, 5))  # ACCGT
    assert mask.flatten().tolist() == [1.0] * 5 + [0.0] * 5


@pytest.mark.parametrize("length", [1, 3, 4, 37, 150])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_read_and_its_reverse_complement_embed_alike(length, training):
    encoder = small_encoder().train(training)
    x = one_hot(5, length, length)
    h = encoder(x)
    assert h.shape == (5, 12)
    assert h.abs().max() > 1e-2  # a constant output would be trivially invariant
    torch.testing.assert_close(encoder(reverse_complement(x)), h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("left", "right"), [(0, 1), (0, 29), (7, 0), (5, 13)])
def test_a_padded_read_embeds_as_the_read_alone(left, right):
    encoder = small_encoder().eval()
    read = one_hot(1, 37, 1)
    alone = encoder(read)
    torch.testing.assert_close(encoder(pad(read, left, right)), alone, rtol=0, atol=1e-5)
    # padded and reverse-complemented: the padding moves to the other side
    rc_padded = reverse_complement(pad(read, left, right))
    torch.testing.assert_close(encoder(rc_padded), alone, rtol=0, atol=1e-5)


def test_reads_of_several_lengths_in_one_batch_embed_as_each_alone():
    encoder = small_encoder().eval()
    reads = [one_hot(1, length, length) for length in (9, 40, 23)]
    batch = torch.cat([pad(r, 0, 40 - r.shape[-1]) for r in reads])
    together = encoder(batch)
    for row, read in enumerate(reads):
        torch.testing.assert_close(together[row : row + 1], encoder(read), rtol=0, atol=1e-5)


def test_attention_sees_beyond_the_stem():
    """The first token (bases 0-3, stem field 5 + 4 * 2 = 13 nt: bases up to 9) changes when
    base 100 changes: only attention connects them."""
    encoder = small_encoder().eval()
    x = one_hot(1, 120, 2)
    changed = x.clone()
    changed[0, :, 100] = changed[0, :, 100].roll(1)
    mask = torch.ones(1, 1, 120)
    with torch.no_grad():
        first = encoder._tokens(x, mask)[0][0, 0]
        first_changed = encoder._tokens(changed, mask)[0][0, 0]
    assert (first - first_changed).abs().max() > 1e-4


def test_gradients_reach_every_parameter():
    encoder = small_encoder()
    encoder(one_hot(3, 30, 3)).pow(2).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_registered_as_dna_attention():
    encoder = ENCODERS.create({"name": "dna_attention", "params": {"embedding_dim": 5}})
    assert isinstance(encoder, DNAConvAttentionEncoder)
    assert encoder.embedding_dim == 5


@pytest.mark.parametrize(
    ("params", "key"),
    [({"token_size": 0}, "token_size"), ({"heads": 3}, "heads"), ({"model_dim": 1.5}, "model_dim")],
)
def test_bad_params_raise_config_error_naming_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        DNAConvAttentionEncoder(**params)


def test_genomes_dilated_sees_509_nt():
    """The dilated CNN of ``genomes_dilated``: width 5, dilations 1, 2, ..., 64, receptive
    field 5 + 4 (2 + 4 + ... + 64) = 509 nt, 254 either side: the feature at position 254
    depends on base 0, the ones from 255 on do not."""
    params = load_experiment("benchmarks/genomes.yaml", "genomes_dilated")["encoder"]["params"]
    torch.manual_seed(0)
    encoder = DNAConvEncoder(**{**params, "channels": 8}).eval()
    x = one_hot(1, 600, 4)
    changed = x.clone()
    changed[0, :, 0] = changed[0, :, 0].roll(1)
    with torch.no_grad():
        moved = (encoder.blocks(encoder.stem(x)) - encoder.blocks(encoder.stem(changed))).abs()
    assert moved[0, :, 254].max() > 0
    assert moved[0, :, 255:].max() == 0
