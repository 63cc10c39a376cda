r"""FedProx's proximal term, as a gradient hook on every trained parameter.

FedProx (Li et al., MLSys 2020) adds :math:`\frac{\mu}{2}\lVert w - w^{t}\rVert^2` to each
site's local loss, :math:`w^t` being the global weights the round started from, so that
sites with unlike data drift less apart. Its gradient is :math:`\mu (w - w^t)`; a hook on each
parameter adds it to the loss's gradient, so the training loop needs no change.

The anchors :math:`w^t` are buffers of :class:`ProximalTerm` (a submodule of the model), set
from the global weights each round (:meth:`ProximalTerm.reset`) and saved with the site's
checkpoint.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

from scicontrast.errors import ConfigError
from scicontrast.experiment import Experiment

M = TypeVar("M", bound=nn.Module)

# The submodule's attribute name on the model; state-dict keys under it never travel.
ATTRIBUTE = "proximal"


class ProximalTerm(nn.Module):
    """Anchors ``w^t`` of ``model``'s trained parameters and the hooks that pull towards them.

    Args:
        model: The model whose parameters get the hooks (not a submodule of this one).
        mu: FedProx's ``mu >= 0``.
    """

    def __init__(self, model: nn.Module, mu: float) -> None:
        super().__init__()
        self.mu = float(mu)
        self.names: list[tuple[str, str]] = []
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            buffer = name.replace(".", "__")
            self.register_buffer(buffer, parameter.detach().clone())
            self.names.append((name, buffer))
            parameter.register_hook(self._hook(parameter, buffer))

    def _hook(self, parameter: Tensor, buffer: str) -> Any:
        def add_proximal_gradient(grad: Tensor) -> Tensor:
            return grad + self.mu * (parameter.detach() - getattr(self, buffer))

        return add_proximal_gradient

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Anchor at ``model``'s current weights (the global weights of a new round)."""
        parameters = dict(model.named_parameters())
        for name, buffer in self.names:
            getattr(self, buffer).copy_(parameters[name])


def with_proximal_term(model: M, experiment: Experiment) -> M:
    """``model`` with a :class:`ProximalTerm` when the experiment federates with FedProx.

    Raises:
        ConfigError: the model has lazy parameters (their shapes are unknown until data
            flows, so they cannot be anchored).
    """
    federated = experiment.federated
    if federated is None or federated.aggregation != "fedprox":
        return model
    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        raise ConfigError(
            f"experiments.{experiment.name}.federated.aggregation: fedprox needs "
            "an encoder without lazy layers (give the graph encoder its in_channels)"
        )
    # Not a submodule of itself: the hooks hold the parameters, the term holds the anchors.
    proximal = ProximalTerm(model, federated.proximal_mu)
    setattr(model, ATTRIBUTE, proximal)
    return model
