"""Why one-class sites lose to central training: batch-norm diagnostics of a trained arm.

::

    python benchmarks/federated_diagnosis.py --out results/federated_bench --arm fedavg_bank

Reads an arm that ``benchmarks/federated.py`` trained in ``--out`` and reports

* ``as trained``: its test probe and kNN accuracy (the benchmark's ``score``);
* ``union statistics``: the same weights with every batch-norm layer's running statistics
  recomputed on the union's training items, layer by layer (an oracle for diagnosis only:
  a server that may not see items cannot do this; ``federated.batch_norm: global`` gets
  the same statistics from the sites' moments). The difference is the part of the gap
  that lies in the averaged running statistics rather than in the weights;
* per site, the mean cosine between an item's projection as the site's training computes
  it (batch-norm layers in training mode on a batch of the site's items: one class) and as
  the bank holds it (evaluation mode, the global running statistics). With
  ``batch_norm: local`` a site's queries and the bank's rows are compared in different
  normalisations unless this is near 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from federated import embed, prepare, score

from scicontrast.config import load_experiment
from scicontrast.data_adapters.base import Items
from scicontrast.models.contrastive import ContrastiveModel, load_model
from scicontrast.models.federated_norm import MEAN, input_moments, mixture_variance
from scicontrast.registry import PAIR_BUILDERS


def union_statistics(model: ContrastiveModel, batches: list[torch.Tensor]) -> None:
    """Set ``model``'s batch-norm statistics to those of ``batches``, one pass per layer, so
    that every layer's input is measured under the earlier layers' final statistics."""
    state = model.state_dict()
    for _ in range(sum(key.endswith(MEAN) for key in state)):
        moments = {k: v.numpy() for k, v in input_moments(model, batches).items()}
        state.update({k: torch.from_numpy(v) for k, v in mixture_variance(moments).items()})
        model.load_state_dict(state)


def site_agreement(model: ContrastiveModel, batches: list[torch.Tensor], batch_size: int) -> float:
    """Mean cosine of each item's projection in training-mode batch norm (batches of
    ``batch_size`` of these items) and in evaluation mode; the model is left unchanged."""
    views = torch.cat(batches)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.eval()
        held = torch.cat([model(b) for b in views.split(batch_size)])
        model.train()
        local = torch.cat([model(b) for b in views.split(batch_size)])
    model.load_state_dict(state)  # training mode moved the running statistics
    model.eval()
    return float(torch.nn.functional.cosine_similarity(local, held).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("benchmarks/federated.yaml"))
    parser.add_argument("--experiment", default="neu_federated")
    parser.add_argument("--out", type=Path, default=Path("results/federated_bench"))
    parser.add_argument("--arm", default="fedavg_bank")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    experiment = load_experiment(args.config, args.experiment)
    items, is_test = prepare(experiment, args.out, 0.2)
    labels = items.table[experiment["analysis"]["label_column"]].to_numpy()
    model = load_model(args.out / args.arm / "model" / "model.pt")[0]
    builder = PAIR_BUILDERS.create(experiment["pairs"], where="pairs")
    batch_size = experiment["training"]["batch_size"]
    lines = [f"{args.arm} in {args.out}"]
    as_trained = score(embed(model, experiment, items), labels, is_test)
    for site in sorted((args.out / args.arm / "model" / "sites").iterdir()):
        site_batches = list(builder.embedding_batches(Items.load(site / "items"), batch_size))
        agreement = site_agreement(model, site_batches, batch_size)
        lines.append(f"site {site.name}: cosine(training-mode, evaluation-mode) {agreement:.3f}")
    train_items = Items.load(args.out / "train" / "items")
    union_statistics(model, list(builder.embedding_batches(train_items, 256)))
    union = score(embed(model, experiment, items), labels, is_test)
    for name, row in (("as trained", as_trained), ("union statistics", union)):
        lines.append(
            f"{name}: test probe {100 * row['probe']:.2f} %, test kNN {100 * row['knn']:.2f} %, "
            f"val probe / kNN {100 * row['val_probe']:.2f} / {100 * row['val_knn']:.2f} %"
        )
    print("\n".join(lines))
    return 0 if np.isfinite(union["knn"]) else 1


if __name__ == "__main__":
    sys.exit(main())
