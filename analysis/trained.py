"""What an evaluation step reads besides the embeddings: the trained model, the pair builder
it trained with, and the pairs table over the items.

The evaluation steps (item-wise, node-wise and cross-modal) all start from these three; the
model file carries the experiment it was trained with, so the builder is the training one
whatever the config says now.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from scicontrast.data_adapters.base import Items, PairBuilder, check_pairs_table
from scicontrast.data_adapters.pairs_table import read_pairs as read_pairs_table
from scicontrast.device import resolve_device
from scicontrast.errors import InputDataError
from scicontrast.experiment import Experiment

if TYPE_CHECKING:
    from scicontrast.models.contrastive import ContrastiveModel


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained model in evaluation mode on ``device``, and the experiment and pair builder
    it was trained with."""

    model: ContrastiveModel
    experiment: Experiment
    builder: PairBuilder
    device: torch.device

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` embeddings of a batch of views, on the CPU."""
        return self.model.embed(views.to(self.device)).cpu()


def load_trained(model_path: str | Path, device: str = "auto") -> TrainedModel:
    """The model at ``model_path`` on ``device`` (``"auto"``: CUDA when available), in
    evaluation mode, with the pair builder of its stored experiment."""
    # Imported here: the array-level evaluation functions must work without the model stack.
    from scicontrast.models.contrastive import load_model
    from scicontrast.registry import PAIR_BUILDERS

    model, experiment = load_model(model_path, map_location="cpu")
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"{model_path}: pairs")
    return TrainedModel(model, experiment, builder, torch_device)


def read_pairs(pairs_path: str | Path, items: Items) -> pd.DataFrame:
    """The pairs table at ``pairs_path``, checked against ``items``.

    Raises:
        InputDataError: the file is missing, lacks a column, or names an item not in
            ``items``.
    """
    pairs = read_pairs_table(pairs_path, items.table["item_id"])
    check_pairs_table(pairs, items, str(pairs_path))
    return pairs


def check_same_items(
    metadata: pd.DataFrame, embeddings_dir: str | Path, items: Items, items_dir: str | Path
) -> None:
    """Raise ``InputDataError`` unless the embeddings table's rows are ``items``' in order."""
    if list(metadata["item_id"]) != list(items.table["item_id"]):
        raise InputDataError(f"{embeddings_dir}: embeddings are not those of the items {items_dir}")
