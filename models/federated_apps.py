"""The federated server and site as Flower apps, for a deployment across institutions.

:func:`scicontrast.models.federated.federate` runs the rounds in one process. Across
machines the same server loop (:func:`~scicontrast.models.federated.run_server`) and site
round (:func:`~scicontrast.models.federated_client.site_round`) run as a Flower
``ServerApp`` on the SuperLink and a ``ClientApp`` on each lab's SuperNode
(``flower-superlink``, ``flower-supernode``; docs/federated.md). The server reads its
settings from the run config, each site from its node config, so items never leave a site:

* run config (``[tool.flwr.app.config]``): ``config`` (a scicontrast config file),
  ``experiment`` (its name), ``out`` (the server's folder);
* node config (``flower-supernode --node-config``): ``site`` (its name), ``config``,
  ``experiment``, ``items`` and ``pairs`` (the site's own ``scicontrast prepare`` and
  ``scicontrast pairs`` outputs), ``state-dir`` (its checkpoints).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from scicontrast.config import load_experiment
from scicontrast.experiment import Experiment
from scicontrast.models.federated import check_experiment, run_server
from scicontrast.models.federated_calibration import site_moments
from scicontrast.models.federated_client import LocalSite, site_round

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def serve(grid: Grid, context: Context) -> None:
    """The server's rounds; ``model.pt`` goes to the run config's ``out``."""
    settings = context.run_config
    experiment = Experiment.from_dict(
        load_experiment(str(settings["config"]), str(settings["experiment"]))
    )
    check_experiment(experiment)
    run_server(grid, experiment, Path(str(settings["out"])))


def _site(context: Context) -> LocalSite:
    node = context.node_config
    return LocalSite(
        str(node["site"]),
        Experiment.from_dict(load_experiment(str(node["config"]), str(node["experiment"]))),
        Path(str(node["items"])),
        Path(str(node["pairs"])),
        Path(str(node["state-dir"])),
    )


@client_app.train()
def train_round(message: Message, context: Context) -> Message:
    """One round at the site the node config describes."""
    return site_round(_site(context), message)


@client_app.query()
def moments(message: Message, context: Context) -> Message:
    """A batch-norm calibration pass (``federated.batch_norm: global``) at that site."""
    return site_moments(_site(context), message)
