"""The sites of a federated experiment: whose items are whose, checked before anything runs.

A site is a lab that keeps its items: ``(name, items, pairs)``. An experiment declares them
in ``federated`` (schema: ``federated.sites``, ``federated.split_by``):

* ``split_by: <column>`` splits the experiment's items by a column of the items table, one
  site per value or one per entry of ``sites`` with the ``values`` it holds (NEU by defect
  class, the genome corpus by species): non-identical sites from one data set;
* otherwise each entry of ``sites`` names its own ``adapter``, and the site's items are what
  that adapter reads, paired by the experiment's pair builder.

:func:`check_sites` refuses, naming the site, what would break or silently distort training:
a site whose items are of another modality or give views of another shape than the first
site's, an encoder that embeds a site's views to another size, a site with fewer groups
than a batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from scicontrast.data_adapters.base import Items
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Experiment
from scicontrast.models.contrastive import ContrastiveModel
from scicontrast.registry import ADAPTERS, PAIR_BUILDERS


@dataclass
class Site:
    """One site's items and its pairs table over them."""

    name: str
    items: Items
    pairs: pd.DataFrame


def subset(items: Items, rows: np.ndarray) -> Items:
    """The items at table positions ``rows`` (sorted), with their arrays."""
    if items.extras:
        raise ConfigError(
            f"items with set-wide arrays ({sorted(items.extras)}: a graph's edges, a patch "
            "store) cannot be split into sites by a column; give each site its own adapter"
        )
    return Items(
        table=items.table.iloc[rows].reset_index(drop=True),
        meta=dict(items.meta),
        arrays={name: array[rows] for name, array in items.arrays.items()},
    )


def build_sites(experiment: Experiment, items: Items, pairs: pd.DataFrame) -> list[Site]:
    """The experiment's sites, in the order they are declared (or of the column's values)."""
    settings = experiment.federated_section()
    where = f"experiments.{experiment.name}.federated"
    column = settings.split_by
    if column is None:
        if not settings.sites:
            raise ConfigError(f"{where}: give sites (each with an adapter) or split_by")
        return [_adapter_site(experiment, entry, where) for entry in settings.sites]
    if column not in items.table.columns:
        raise ConfigError(
            f"{where}.split_by: {column!r} is not a column of the items table "
            f"(columns: {', '.join(map(str, items.table.columns))})"
        )
    values = items.table[column]
    entries = settings.sites or [
        {"name": _site_name(value), "values": [value]} for value in sorted(values.dropna().unique())
    ]
    sites = []
    for entry in entries:
        if "values" not in entry:
            raise ConfigError(f"{where}.sites.{entry['name']}: with split_by, list its values")
        rows = np.flatnonzero(values.isin(entry["values"]).to_numpy())
        site_items = subset(items, rows)
        site_pairs = pairs[pairs["item_id"].isin(site_items.table["item_id"])]
        sites.append(Site(entry["name"], site_items, site_pairs.reset_index(drop=True)))
    return sites


def _site_name(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(value))


def _adapter_site(experiment: Experiment, entry: dict[str, Any], where: str) -> Site:
    name = entry["name"]
    if "adapter" not in entry:
        raise ConfigError(f"{where}.sites.{name}: without split_by, give the site's adapter")
    adapter = ADAPTERS.create(entry["adapter"], where=f"{where}.sites.{name}.adapter")
    items = adapter.read()
    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"experiments.{name}.pairs")
    return Site(name, items, builder.build(items))


def check_sites(experiment: Experiment, sites: list[Site], model: ContrastiveModel) -> None:
    """Refuse sites that cannot train one model together (module docstring).

    Args:
        experiment: The validated experiment.
        sites: Its sites (at least one).
        model: A freshly built model of the experiment, used to embed one view per site.

    Raises:
        InputDataError: naming the site, for another modality, view shape or embedding
            size than the first site's, or fewer groups than ``training.batch_size``.
    """
    names = [site.name for site in sites]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ConfigError(f"federated.sites: duplicate site names {sorted(duplicated)}")
    batch_size = experiment.training.batch_size
    reference = None
    for site in sites:
        groups = site.pairs["group_id"].nunique()
        if groups < batch_size:
            raise InputDataError(
                f"site {site.name!r}: {groups} groups, fewer than a batch of "
                f"training.batch_size = {batch_size}"
            )
        signature = _signature(experiment, site, model)
        if reference is None:
            reference = (site.name, signature)
        elif signature != reference[1]:
            raise InputDataError(
                f"site {site.name!r}: {_describe(signature)}, but site {reference[0]!r} has "
                f"{_describe(reference[1])}; all sites must hold the same kind of items"
            )


def _signature(
    experiment: Experiment, site: Site, model: ContrastiveModel
) -> tuple[Any, tuple[int, ...], int | None]:
    """``(modality, shape of one canonical view, embedding size)`` of a site's items."""
    builder = PAIR_BUILDERS.create(experiment.pairs, where=f"site {site.name}")
    try:
        batch = next(iter(builder.embedding_batches(site.items, 1)))
    except Exception as exc:  # the builder refuses the site's items in its own words
        raise InputDataError(f"site {site.name!r}: {exc}") from None
    shape = tuple(batch.shape[1:]) if isinstance(batch, torch.Tensor) else ()
    model.eval()
    try:
        with torch.no_grad():
            dim = int(model.embed(batch).shape[-1])
    except Exception as exc:  # an encoder raises its own error types on a wrong input size
        raise InputDataError(
            f"site {site.name!r}: the encoder cannot embed its items ({exc})"
        ) from None
    return site.items.meta.get("modality"), shape, dim


def _describe(signature: tuple[Any, tuple[int, ...], int | None]) -> str:
    modality, shape, dim = signature
    return f"modality {modality!r}, views of shape {list(shape)} and embeddings of size {dim}"
