r"""Cross-modal evaluation of audio-image embeddings: retrieval both ways and zero-shot labels.

All similarities are cosines in the joint space the symmetric loss aligns: the projections
``z = head(h)`` of the exported embeddings ``h`` (the model's head in evaluation mode). The
loss only ever compares the two towers through the shared head, so their ``h`` need not
point the same way, while their ``z`` do. Queries and candidates are the audio and image
items of the *evaluation events*: the events training held out
(``training.holdout_fraction``, the same seeded draw as training) when there are any, else
all events.

**Retrieval** (``audio_to_image`` and ``image_to_audio``). For each query, the candidates of
the other modality are ranked by cosine.

* ``class_r1``, ``class_r5``: the fraction of queries with a candidate of the query's class
  (``label_column``) among the top 1 / top 5. ``class_r1_chance`` is the expected
  ``class_r1`` of a random ranking: the mean over queries of the share of candidates of the
  query's class.
* ``exact_r1``, ``exact_r5``: the fraction of queries whose own partner (the other side of
  its event) is in the top 1 / top 5; meaningful because each event has exactly one item
  per modality. Chance is ``1 / candidates`` for ``exact_r1``.

**Zero-shot classification** of audio. A prototype per class is the normalised mean of the
normalised image embeddings of that class, taken from the *other* events (the training
events when some were held out, else all); each evaluation audio clip gets the class of its
most similar prototype. Reported: accuracy and balanced accuracy (mean per-class recall).

**Invariance** (as for every domain): with ``cos_positive`` the mean cosine between the two
sides of an event and ``cos_random`` the mean cosine between an audio clip and the images
of ``negatives`` random other events, ``score = (cos_positive - cos_random) /
(1 - cos_random)``.

``evaluate_audio_image`` also copies the synchronisation summary (offsets, unmatched
counts, pairing precision against a simulation's ground truth) from the items' metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from scicontrast.analysis.baselines import Scores, compare, metric_summary, untrained_embeddings
from scicontrast.analysis.cca_baseline import cca_features
from scicontrast.analysis.embed import load_embeddings
from scicontrast.analysis.trained import TrainedModel, check_same_items, load_trained, read_pairs
from scicontrast.data_adapters.base import Items, held_out_groups
from scicontrast.errors import ConfigError, InputDataError
from scicontrast.experiment import Analysis
from scicontrast.io import write_json


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval_metrics(
    queries: np.ndarray,
    candidates: np.ndarray,
    partner: np.ndarray,
    query_labels: np.ndarray | None = None,
    candidate_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Recall at 1 and 5 of ``queries [Q, D]`` against ``candidates [C, D]`` (cosine).

    Args:
        partner: ``[Q]`` index of each query's own candidate (its event's other side).
        query_labels, candidate_labels: Classes; with them, class-level recalls too.

    Returns:
        ``queries``, ``candidates``, ``exact_r1``, ``exact_r5``, ``exact_r1_chance`` and, with
        labels, ``class_r1``, ``class_r5``, ``class_r1_chance`` (module docstring).
    """
    similarity = _unit(queries) @ _unit(candidates).T
    k = min(5, similarity.shape[1])
    # Ties broken by candidate index, so that the result does not depend on the sort.
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    partner = np.asarray(partner)
    result: dict[str, Any] = {
        "queries": int(similarity.shape[0]),
        "candidates": int(similarity.shape[1]),
        "exact_r1": float(np.mean(top[:, 0] == partner)),
        "exact_r5": float(np.mean((top == partner[:, None]).any(axis=1))),
        "exact_r1_chance": 1.0 / similarity.shape[1],
    }
    if query_labels is not None and candidate_labels is not None:
        query_labels = np.asarray(query_labels, dtype=object)
        candidate_labels = np.asarray(candidate_labels, dtype=object)
        same = candidate_labels[top] == query_labels[:, None]
        result["class_r1"] = float(np.mean(same[:, 0]))
        result["class_r5"] = float(np.mean(same.any(axis=1)))
        result["class_r1_chance"] = float(
            np.mean(candidate_labels[None, :] == query_labels[:, None])
        )
    return result


def zero_shot_accuracy(
    audio: np.ndarray,
    audio_labels: np.ndarray,
    images: np.ndarray,
    image_labels: np.ndarray,
) -> dict[str, Any]:
    """Classify ``audio [Q, D]`` by the nearest class prototype of ``images [N, D]``."""
    audio_labels = np.asarray(audio_labels, dtype=object)
    image_labels = np.asarray(image_labels, dtype=object)
    classes = np.array(sorted(set(image_labels.tolist()), key=str), dtype=object)
    unit_images = _unit(images)
    prototypes = _unit(np.stack([unit_images[image_labels == c].mean(axis=0) for c in classes]))
    predicted = classes[np.argmax(_unit(audio) @ prototypes.T, axis=1)]
    correct = predicted == audio_labels
    recalls = [
        float(np.mean(correct[audio_labels == c])) for c in sorted(set(audio_labels), key=str)
    ]
    return {
        "queries": len(audio_labels),
        "classes": len(classes),
        "prototype_images": len(image_labels),
        "accuracy": float(np.mean(correct)),
        "balanced_accuracy": float(np.mean(recalls)),
        "chance": 1.0 / len(classes),
    }


def cross_modal_invariance(
    audio: np.ndarray, images: np.ndarray, negatives: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Invariance score of paired rows ``audio[i] <-> images[i]`` (module docstring)."""
    n = len(audio)
    if n < 2:
        raise ValueError(f"the invariance score needs at least 2 events, got {n}")
    a, b = _unit(audio), _unit(images)
    cos_positive = float(np.mean(np.sum(a * b, axis=1)))
    rng = np.random.default_rng(seed)
    count = min(negatives, n - 1)
    others = np.stack(
        [(i + 1 + rng.choice(n - 1, size=count, replace=False)) % n for i in range(n)]
    )
    cos_random = float(np.mean(np.sum(a[:, None, :] * b[others], axis=2)))
    spread = 1.0 - cos_random
    return {
        "cos_positive": cos_positive,
        "cos_random": cos_random,
        "score": (cos_positive - cos_random) / spread if spread > 1e-8 else None,
        "groups": n,
        "groups_total": n,
        "negatives": count,
    }


def audio_image_metrics(
    table: pd.DataFrame,
    embeddings: np.ndarray,
    evaluation_events: np.ndarray,
    label_column: str | None = None,
    negatives: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Retrieval, zero-shot and invariance for an items table (``modality``, ``event``) and
    its embeddings ``[N, D]``, on ``evaluation_events`` (module docstring)."""
    if label_column is not None and label_column not in table.columns:
        raise ConfigError(
            f"analysis.label_column {label_column!r} is not an items column; "
            f"columns: {list(table.columns)}"
        )
    rows = {}
    for side in ("audio", "image"):
        side_rows = table[table["modality"] == side]
        rows[side] = pd.Series(side_rows.index.to_numpy(), index=side_rows["event"].to_numpy())
    evaluated = np.intersect1d(
        np.intersect1d(rows["audio"].index, rows["image"].index), evaluation_events
    )
    if len(evaluated) < 2:
        raise InputDataError(f"{len(evaluated)} complete audio-image events to evaluate; need 2")
    audio_rows = rows["audio"].loc[evaluated].to_numpy()
    image_rows = rows["image"].loc[evaluated].to_numpy()
    audio, images = embeddings[audio_rows], embeddings[image_rows]
    labels = None
    if label_column is not None:
        labels = table[label_column].to_numpy(dtype=object)
    partner = np.arange(len(evaluated))
    result: dict[str, Any] = {
        "events": len(evaluated),
        "invariance": cross_modal_invariance(audio, images, negatives, seed),
        "retrieval": {
            "audio_to_image": retrieval_metrics(
                audio,
                images,
                partner,
                None if labels is None else labels[audio_rows],
                None if labels is None else labels[image_rows],
            ),
            "image_to_audio": retrieval_metrics(
                images,
                audio,
                partner,
                None if labels is None else labels[image_rows],
                None if labels is None else labels[audio_rows],
            ),
        },
    }
    if labels is not None:
        others = np.setdiff1d(rows["image"].index, evaluated)
        prototype_rows = rows["image"].loc[others if len(others) else evaluated].to_numpy()
        result["zero_shot"] = zero_shot_accuracy(
            audio, labels[audio_rows], embeddings[prototype_rows], labels[prototype_rows]
        )
        result["zero_shot"]["prototypes_from"] = "other events" if len(others) else "same events"
    return result


def evaluate_audio_image(
    model_path: str | Path,
    items_dir: str | Path,
    pairs_path: str | Path,
    embeddings_dir: str | Path,
    out_path: str | Path,
    analysis: Analysis,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate audio-image embeddings (module docstring); write and return the JSON.

    ``seed`` (the experiment's training seed) draws the invariance score's negatives. With
    ``analysis.baselines``, the same metrics for MFCCs and pixels joined by CCA
    (:func:`cca_features`) and, with ``analysis.untrained_control``, the model before
    training (``scicontrast.analysis.baselines``; key ``comparison``).

    The hold-out (fraction and seed) and the head come from the model file.
    """
    # On the CPU whatever the device: the head alone runs here, on the exported embeddings.
    trained = load_trained(model_path, device="cpu")
    items = Items.load(items_dir)
    metadata, embeddings = load_embeddings(embeddings_dir)
    check_same_items(metadata, embeddings_dir, items, items_dir)
    pairs = read_pairs(pairs_path, items)
    with torch.no_grad():
        joint = trained.model.head(torch.from_numpy(np.asarray(embeddings, np.float32))).numpy()
    training = trained.experiment.training
    held_out = held_out_groups(pairs, training.holdout_fraction, training.seed)
    events = held_out if len(held_out) else np.unique(pairs["group_id"].to_numpy())
    metrics = audio_image_metrics(
        items.table, joint, events, analysis.label_column, analysis.invariance_negatives, seed
    )
    result: dict[str, Any] = {
        "n_items": len(embeddings),
        "embedding_dim": int(embeddings.shape[1]),
        "label_column": analysis.label_column,
        "evaluation_events": "held out from training" if len(held_out) else "all (training) events",
        "space": "projection z = head(h)",
        **metrics,
        "synchronization": items.meta.get("synchronization"),
    }
    if analysis.baselines:
        fit_events = np.setdiff1d(np.unique(pairs["group_id"].to_numpy()), held_out)
        result["comparison"] = _comparison(
            _retrieval_scores(result),
            trained,
            items,
            events,
            fit_events if len(fit_events) else events,
            analysis,
        )
    write_json(out_path, result)
    return result


def _comparison(
    trained_scores: Scores,
    trained: TrainedModel,
    items: Items,
    events: np.ndarray,
    fit_events: np.ndarray,
    analysis: Analysis,
) -> dict[str, Any]:
    """The ``comparison`` entry: the trained projections' scores on ``events`` beside those
    of CCA fitted on ``fit_events`` and (``analysis.untrained_control``) the untrained
    model's projections."""

    def score(features: np.ndarray) -> Scores:
        return _retrieval_scores(
            audio_image_metrics(items.table, features, events, analysis.label_column)
        )

    untrained = None
    if analysis.untrained_control:
        untrained = untrained_embeddings(trained.experiment, trained.builder, items, projected=True)
    return compare(trained_scores, score, [cca_features(items, fit_events)], untrained)


def _retrieval_scores(metrics: dict[str, Any]) -> Scores:
    """The compared metrics: exact and class recall at 1 both ways, zero-shot accuracy."""
    scores = {}
    for direction, name in (("audio_to_image", "audio->image"), ("image_to_audio", "image->audio")):
        found = metrics["retrieval"][direction]
        scores[f"{name} exact R@1"] = metric_summary(found["exact_r1"])
        if "class_r1" in found:
            scores[f"{name} class R@1"] = metric_summary(found["class_r1"])
    if "zero_shot" in metrics:
        scores["zero-shot accuracy"] = metric_summary(metrics["zero_shot"]["accuracy"])
    return scores


def format_audio_image(evaluation: dict[str, Any]) -> list[str]:
    """Report lines for the retrieval, zero-shot and synchronisation results."""
    lines = [
        "",
        f"Cross-modal retrieval on {evaluation['events']} events "
        f"({evaluation['evaluation_events']})",
    ]
    rows = [["", "class R@1", "class R@5", "exact R@1", "exact R@5", "chance R@1 (class/exact)"]]
    for direction, name in (
        ("audio_to_image", "audio -> image"),
        ("image_to_audio", "image -> audio"),
    ):
        found = evaluation["retrieval"][direction]
        rows.append(
            [
                name,
                _percent(found.get("class_r1")),
                _percent(found.get("class_r5")),
                _percent(found["exact_r1"]),
                _percent(found["exact_r5"]),
                f"{_percent(found.get('class_r1_chance'))} / {_percent(found['exact_r1_chance'])}",
            ]
        )
    lines += _table(rows)
    zero_shot = evaluation.get("zero_shot")
    if zero_shot is not None:
        lines += [
            "",
            f"Zero-shot audio classification by image prototypes ({zero_shot['classes']} classes, "
            f"prototypes from {zero_shot['prototypes_from']})",
        ]
        lines += _table(
            [
                ["accuracy", _percent(zero_shot["accuracy"])],
                ["balanced accuracy", _percent(zero_shot["balanced_accuracy"])],
                ["chance", _percent(zero_shot["chance"])],
            ]
        )
    sync = evaluation.get("synchronization")
    if sync:
        lines += [
            "",
            f"Synchronisation (reference {sync['reference_device']!r}, "
            f"tolerance {sync['tolerance_s']:g} s)",
        ]
        rows = [["device", "offset (s)", "events", "matched", "unmatched"]]
        for device, info in sorted(sync["devices"].items()):
            rows.append(
                [
                    device,
                    f"{info['offset_s']:+.3f}",
                    str(info["events"]),
                    str(info["matched"]),
                    str(info["unmatched"]),
                ]
            )
        lines += _table(rows)
        pairing = sync.get("pairing")
        if pairing is not None:
            lines.append(
                f"  pairing vs ground truth: precision {_percent(pairing['precision'])}, "
                f"recall {_percent(pairing['recall'])} ({pairing['correct']} of "
                f"{pairing['pairs']} pairs correct)"
            )
    return lines


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
