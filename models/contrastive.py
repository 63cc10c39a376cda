"""The contrastive model (encoder + projection head + loss) and its file format.

::

    x --encoder--> h [N, D] --head--> z [N, output_dim] --InfoNCE(z, group_ids)--> loss
                   (embed)            (forward)

``embed`` returns ``h``, the embedding the analysis step exports; ``forward`` returns ``z``,
which only the loss sees (see ``scicontrast.models.heads``). The loss is a submodule so that
a learnable temperature is trained, saved and restored with the weights.

File format of ``model.pt`` (``torch.save`` of a dict; read with ``weights_only=True``)::

    {"format_version": 1,
     "experiment": {...},     # the validated experiment the model was built from
     "state_dict": {...}}     # ContrastiveModel.state_dict()

The stored experiment is enough to rebuild the model, so a model file needs no config file
beside it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from scicontrast.config import experiment_as_config, select_experiment, validate_config
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Experiment
from scicontrast.io import atomic_path
from scicontrast.models.chunked_loss import ChunkedInfoNCELoss
from scicontrast.models.ensemble import EnsembleEncoder, EnsembleHead, member_experiment
from scicontrast.models.federated_norm import with_global_batch_norm
from scicontrast.models.heads import ProjectionHead
from scicontrast.models.losses import InfoNCELoss
from scicontrast.models.moco import KeyQueue, MomentumEncoder
from scicontrast.models.negative_bank import banked_loss
from scicontrast.models.proximal import with_proximal_term
from scicontrast.registry import ENCODERS

FORMAT_VERSION = 1


class ContrastiveModel(nn.Module):
    """An encoder, the projection head on top of it, and the loss that trains both.

    With a MoCo key queue (``loss.queue_size > 0``) the model also owns the momentum copy of
    encoder + head and the queue of past keys, so that checkpoints restore them exactly.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        loss: InfoNCELoss,
        key_queue: KeyQueue | None = None,
        momentum: float = 0.999,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.loss = loss
        self.key_queue = key_queue
        self.momentum_encoder = (
            None if key_queue is None else MomentumEncoder(_Projection(encoder, head), momentum)
        )

    def keys(self, x: Tensor) -> Tensor:
        """MoCo keys ``[N, output_dim]`` from the momentum encoder, without a graph."""
        if self.momentum_encoder is None:
            raise RuntimeError("this model has no key queue (loss.queue_size is 0)")
        return self.momentum_encoder(x)

    def update_momentum_encoder(self) -> None:
        """Move the momentum encoder towards the current weights (after an optimiser step)."""
        if self.momentum_encoder is not None:
            self.momentum_encoder.update(_Projection(self.encoder, self.head))

    def embed(self, x: Tensor) -> Tensor:
        """The encoder output ``h [N, D]``: what gets exported and analysed."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        """The projection ``z = head(encoder(x))``: what the loss compares."""
        return self.head(self.encoder(x))


class _Projection(nn.Module):
    """``head(encoder(x))`` over shared modules: what the momentum encoder copies."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def build_model(experiment: Experiment) -> ContrastiveModel:
    """Build a freshly initialised model from a typed experiment.

    The encoder comes from the ``ENCODERS`` registry and must expose ``embedding_dim``.
    With ``training.ensemble > 1``: the ensemble of that many members
    (:func:`ensemble_model`).
    """
    members = experiment.training.ensemble
    if members > 1:
        return ensemble_model(
            [build_model(member_experiment(experiment, k)) for k in range(members)]
        )
    where = f"experiments.{experiment.name}.encoder"
    encoder = ENCODERS.create(experiment.encoder, where=where)
    embedding_dim = getattr(encoder, "embedding_dim", None)
    if not isinstance(embedding_dim, int):
        raise ConfigError(
            f"{where}: encoder {experiment.encoder.name!r} has no integer attribute "
            "'embedding_dim' (the size of its output), which the projection head needs"
        )
    head = ProjectionHead(
        embedding_dim,
        hidden_dim=experiment.head.hidden_dim,
        output_dim=experiment.head.output_dim,
    )
    settings = experiment.loss
    loss_class = ChunkedInfoNCELoss if settings.implementation == "chunked" else InfoNCELoss
    loss = banked_loss(experiment) or loss_class(
        temperature=settings.temperature,
        learnable_temperature=settings.learnable_temperature,
    )
    key_queue = None
    if settings.queue_size:
        key_queue = KeyQueue(settings.queue_size, experiment.head.output_dim)
    try:
        model = ContrastiveModel(encoder, head, loss, key_queue, settings.momentum)
    except ConfigError as exc:
        raise ConfigError(f"experiments.{experiment.name}.loss: {exc}") from None
    # Federated training (scicontrast.models.federated): FedProx's pull to the global
    # weights, batch-norm layers that keep the union's statistics.
    return with_global_batch_norm(with_proximal_term(model, experiment), experiment)


def ensemble_model(members: list[ContrastiveModel]) -> ContrastiveModel:
    """One model over trained members (``scicontrast.models.ensemble``): their encoders side
    by side, their heads on their own slices, and the first member's loss (temperature)."""
    encoder = EnsembleEncoder([member.encoder for member in members])
    head = EnsembleHead([member.head for member in members], encoder.member_dims)
    return ContrastiveModel(encoder, head, members[0].loss)


def save_model(path: str | Path, model: ContrastiveModel, experiment: Experiment) -> None:
    """Write ``model`` and the experiment it was built from to ``path``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "format_version": FORMAT_VERSION,
                "experiment": experiment.to_dict(),
                "state_dict": model.state_dict(),
            },
            tmp,
        )


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[ContrastiveModel, Experiment]:
    """Rebuild the model stored at ``path``; return it in eval mode with its experiment."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: model file not found")
    try:
        stored = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise InputDataError(f"{path}: not a readable model file ({exc})") from None
    if not isinstance(stored, dict) or stored.get("format_version") != FORMAT_VERSION:
        version = stored.get("format_version") if isinstance(stored, dict) else None
        raise InputDataError(
            f"{path}: not a scicontrast model file of format_version {FORMAT_VERSION} "
            f"(found {version!r})"
        )
    # Validating fills the defaults of settings added since the file was written.
    try:
        experiment = Experiment.from_dict(
            select_experiment(
                validate_config(experiment_as_config(stored["experiment"]), source=str(path)),
                stored["experiment"]["name"],
                str(path),
            )
        )
    except ConfigError as exc:
        raise InputDataError(f"{path}: the stored experiment is not valid ({exc})") from None
    model = build_model(experiment)
    try:
        model.load_state_dict(stored["state_dict"])
    except RuntimeError as exc:
        raise InputDataError(
            f"{path}: weights do not fit the model its experiment describes ({exc})"
        ) from None
    model.to(map_location)
    model.eval()
    return model, experiment
