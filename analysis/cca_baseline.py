"""The classical baseline of audio-image retrieval: MFCCs and pixels joined by CCA.

Each side gets its classical features (``scicontrast.data_adapters.classical``): the audio
clip its MFCC statistics, the image its raw pixels. Canonical correlation analysis
(Hotelling, Biometrika 28:321, 1936) then finds directions ``u_j``, ``v_j`` that maximise
``corr(a u_j, b v_j)`` over the paired events it is fitted on, and maps every audio clip to
``a U`` and every image to ``b V``: a joint space of ``k`` dimensions in which retrieval and
zero-shot classification are scored exactly as for the learned projections. Before CCA,
each side is standardised and reduced by PCA to at most half the fitting pairs (and 64
dimensions), because CCA overfits when dimensions approach the number of samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cross_decomposition import CCA
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from scicontrast.data_adapters.base import Items
from scicontrast.data_adapters.classical import ClassicalFeatures, mfcc_statistics, raw_pixels

NAME = "MFCC statistics and raw pixels, CCA"
SIDES = ("audio", "image")
MIN_EVENTS = 4


def side_features(items: Items) -> dict[str, ClassicalFeatures]:
    """MFCC statistics of the clips and raw pixels of the images, rows as the extras'."""
    return {
        "audio": mfcc_statistics(items.extras["audio"], int(items.meta["sample_rate"])),
        "image": raw_pixels(items.extras["images"]),
    }


def _rows_by_event(table: pd.DataFrame, side: str) -> pd.Series:
    """Row of the side's extra array (``modality_row``) for each event with that side."""
    rows = table[table["modality"] == side]
    return pd.Series(rows["modality_row"].to_numpy(), index=rows["event"].to_numpy())


class CCAUnavailable(ValueError):
    """The items cannot give the CCA baseline (too few events, clips too short)."""


class CCABaseline:
    """Fitted on the paired events of one items set, it maps any audio-image items set into
    the joint space (module docstring)."""

    def __init__(self, max_components: int = 16) -> None:
        self.max_components = max_components
        self.reducers: dict[str, Pipeline] = {}
        self.cca: CCA | None = None

    def fit(self, items: Items, events: np.ndarray) -> CCABaseline:
        """Fit on the events of ``events`` that have both a clip and an image;
        :class:`CCAUnavailable` with fewer than ``MIN_EVENTS`` such events or clips too
        short for MFCCs."""
        features = {}
        for side, found in side_features(items).items():
            if found.features is None:
                raise CCAUnavailable(found.skipped)
            features[side] = found.features
        by_event = {side: _rows_by_event(items.table, side) for side in SIDES}
        paired = np.intersect1d(by_event["audio"].index, by_event["image"].index)
        paired = np.intersect1d(paired, events)
        if len(paired) < MIN_EVENTS:
            raise CCAUnavailable(f"{len(paired)} complete events to fit CCA on; need {MIN_EVENTS}")
        reduced = {}
        for side in SIDES:
            matrix = features[side][by_event[side].loc[paired].to_numpy()]
            dims = max(1, min(matrix.shape[1], len(paired) // 2, 64))
            self.reducers[side] = make_pipeline(StandardScaler(), PCA(dims, random_state=0))
            reduced[side] = self.reducers[side].fit_transform(matrix)
        k = min(self.max_components, *(r.shape[1] for r in reduced.values()))
        self.cca = CCA(n_components=k, max_iter=1000).fit(reduced["audio"], reduced["image"])
        return self

    def transform(self, items: Items) -> np.ndarray:
        """``[N, k]`` in the items' table order: audio rows their clip's projection, image
        rows their image's."""
        if self.cca is None:
            raise RuntimeError("CCABaseline: fit before transform")
        features = side_features(items)
        reduced = {s: self.reducers[s].transform(features[s].features) for s in SIDES}
        # CCA.transform maps each side with its own rotation; the zeros passed beside the
        # images only fill the argument for the first side.
        projected = {
            "audio": self.cca.transform(reduced["audio"]),
            "image": self.cca.transform(
                np.zeros((len(reduced["image"]), reduced["audio"].shape[1])), reduced["image"]
            )[1],
        }
        joint = np.zeros((len(items.table), self.cca.n_components))
        for side in SIDES:
            rows = (items.table["modality"] == side).to_numpy()
            joint[rows] = projected[side][items.table.loc[rows, "modality_row"].to_numpy()]
        return joint


def cca_features(items: Items, fit_events: np.ndarray) -> ClassicalFeatures:
    """The joint CCA space of ``items`` fitted on ``fit_events``, or why it cannot be had."""
    try:
        return ClassicalFeatures(NAME, CCABaseline().fit(items, fit_events).transform(items))
    except CCAUnavailable as exc:
        return ClassicalFeatures(NAME, skipped=str(exc))
