"""The ensemble modules: members side by side, per-tower methods included, and a joint
projection whose cosine similarity is the members' mean. (Training an ensemble, resuming
it and its metrics are tested in test_train.py; exporting one in test_export.py.)"""

import torch
import torch.nn.functional as F

from scicontrast.models.audio_image import TwoTowerEncoder
from scicontrast.models.ensemble import EnsembleEncoder, EnsembleHead
from scicontrast.models.heads import ProjectionHead


def two_tower_ensemble() -> tuple[list[TwoTowerEncoder], EnsembleEncoder]:
    torch.manual_seed(0)
    members = [TwoTowerEncoder(embedding_dim=8, n_mels=20).eval() for _ in range(3)]
    return members, EnsembleEncoder(members)


def test_two_tower_members_keep_their_per_tower_methods_side_by_side():
    members, ensemble = two_tower_ensemble()
    waveforms, images = torch.randn(4, 8000), torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        audio = ensemble.embed_audio(waveforms)
        pictures = ensemble.embed_images(images)
        assert torch.equal(audio, torch.cat([m.embed_audio(waveforms) for m in members], dim=1))
        assert torch.equal(pictures, torch.cat([m.embed_images(images) for m in members], dim=1))
    assert audio.shape == (4, ensemble.embedding_dim) == (4, 24)
    assert not torch.allclose(audio[:, :8], audio[:, 8:16])  # members are independent


def test_joint_projection_cosine_is_the_mean_of_the_members_cosines():
    torch.manual_seed(0)
    dims = [6, 10]
    heads = [ProjectionHead(d, hidden_dim=12, output_dim=4).eval() for d in dims]
    head = EnsembleHead(heads, dims)
    h = torch.randn(7, sum(dims))
    with torch.no_grad():
        z = head(h)
        parts = zip(heads, h.split(dims, dim=1), strict=True)
        members = [F.normalize(member_head(part), dim=1) for member_head, part in parts]
    assert torch.allclose(z.norm(dim=1), torch.ones(7))
    assert torch.allclose(z @ z.T, sum(m @ m.T for m in members) / len(members), atol=1e-6)
