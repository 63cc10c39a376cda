r"""Batch normalisation across federated sites: the union's statistics, not each site's.

With ``federated.batch_norm: local`` (plain FedAvg) every site normalises each training
batch with that batch's own statistics, and the server averages the sites' running means
and variances. When sites are non-identical (NEU split by defect class: one class per
site) a site's batch statistics are its class's, so every normalisation layer subtracts the
class mean during local training: what tells one site's items from another's is removed
before the loss sees it, and the global negative bank, whose rows are computed with the
global statistics, lives in another coordinate system than the site's queries. The averaged
variances are means of within-site variances and miss the between-site part.

``federated.batch_norm: global`` keeps one set of statistics, the union's:

* during local training every batch-norm layer normalises with the global running
  statistics it received (evaluation-mode normalisation; the affine scale and shift still
  train): a site's queries, the bank's rows and the final model use the same function;
* before the first round and after every aggregation the server sets the global model's
  statistics to the union's (a federated form of SWA's ``update_bn``;
  :func:`scicontrast.models.federated_calibration.calibrate`):
  it sends the global weights, each site replies with the mean :math:`m_k` and raw second
  moment :math:`q_k = E_k[x^2]` of every batch-norm layer's input over its items' canonical
  views (:func:`input_moments`, the model in evaluation mode), and the server forms,
  weighting site ``k`` by its share :math:`w_k` of the items, :math:`M = \sum_k w_k m_k`
  and (:func:`mixture_variance`) the law of total variance

  .. math:: \sigma^2 = \sum_k w_k q_k - M^2
            = \sum_k w_k \sigma_k^2 + \sum_k w_k (m_k - M)^2,

  within-site plus between-site variance. A layer's input depends on the statistics of
  the layers before it, so this repeats once per batch-norm layer: after pass ``i`` the
  first ``i`` layers (in the order data flows) hold the union's exact statistics under the
  global weights, whatever order the model lists them in.

No item leaves a site: per pass a site sends two numbers per channel. With one site the
statistics are that site's; central training is unchanged (this applies to federated
sites only). Round 0 starts from the seeded initial weights the server builds, so the
encoder must have no lazy layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from scicontrast.experiment import Experiment

M = TypeVar("M", bound=nn.Module)

MEAN, VAR = ".running_mean", ".running_var"


def _global_statistics(module: nn.Module, args: Any) -> None:
    # model.train() sets every module's flag at each epoch's start; this resets it just
    # before the layer runs, so the layer normalises with its running statistics and
    # leaves them unchanged, while its scale and shift still get gradients.
    module.training = False


def with_global_batch_norm(model: M, experiment: Experiment) -> M:
    """``model`` whose batch-norm layers normalise with their running statistics even in
    training mode, when the experiment federates with ``batch_norm: global``."""
    federated = experiment.federated
    if federated is None or federated.batch_norm != "global":
        return model
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.register_forward_pre_hook(_global_statistics)
    return model


@torch.no_grad()
def input_moments(model: nn.Module, batches: Iterable[Any]) -> dict[str, Tensor]:
    """Mean and raw second moment per channel of every batch-norm layer's input.

    Runs ``model`` in evaluation mode over ``batches``; a layer's input ``x [N, C, ...]``
    contributes every value of channel ``c`` (over samples and positions) to
    ``m_c = E[x_c]`` and ``q_c = E[x_c^2]``. Returns ``{"<layer>.running_mean": m [C],
    "<layer>.running_var": q [C]}`` (state-dict keys, so that the moments travel where the
    running statistics do), in float32.
    """
    sums: dict[str, list[Any]] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            x = args[0].double()
            dims = [0, *range(2, x.dim())]
            total = sums.setdefault(name, [0, 0.0, 0.0])
            total[0] += x.numel() // x.shape[1]
            total[1] = total[1] + x.sum(dims)
            total[2] = total[2] + (x * x).sum(dims)

        return hook

    handles = [
        module.register_forward_pre_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm)
    ]
    model.eval()
    try:
        for batch in batches:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    moments = {}
    for name, (count, first, second) in sums.items():
        moments[name + MEAN] = (first / count).float()
        moments[name + VAR] = (second / count).float()
    return moments


def mixture_variance(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The union's variance from averaged moments: every ``<layer>.running_var`` (the
    weighted mean ``Q`` of the sites' second moments) becomes ``Q - M^2`` with ``M`` the
    layer's ``running_mean`` (module docstring); other entries are returned unchanged."""
    out = dict(arrays)
    for key, second in arrays.items():
        if key.endswith(VAR):
            mean = arrays[key[: -len(VAR)] + MEAN]
            out[key] = np.maximum(second - mean * mean, 0.0).astype(second.dtype)
    return out
