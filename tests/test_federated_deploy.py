"""The federated server and sites as separate processes on localhost: ``flower-superlink``,
one ``flower-supernode`` per site and ``flwr run`` (docs/federated.md), against the same run
in one process.

Flower's command-line programs are its entry points (``flwr.superlink.cli:flower_superlink``
and the others) run by this interpreter, so that the ``flwr-serverapp`` and
``flwr-clientapp`` processes the SuperLink and SuperNodes start import this scicontrast (the
``flower-*`` scripts on PATH may belong to another Python).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_federated import BANK, THREE_LABS, make_experiment, write_sites
from test_train import assert_same_weights

from scicontrast.config import experiment_as_config
from scicontrast.experiment import Experiment
from scicontrast.models import federated

ENTRY_POINTS = {
    "flower-superlink": "flwr.superlink.cli:flower_superlink",
    "flower-supernode": "flwr.supernode.cli:flower_supernode",
    "flower-superexec": "flwr.supercore.cli:flower_superexec",
    "flwr-serverapp": "flwr.superlink.cli:flwr_serverapp",
    "flwr-clientapp": "flwr.supernode.cli:flwr_clientapp",
    "flwr": "flwr.cli.app:app",
}

APP = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "scicontrast-federated"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "scicontrast"

[tool.flwr.app.components]
serverapp = "scicontrast.models.federated_apps:server_app"
clientapp = "scicontrast.models.federated_apps:client_app"

[tool.flwr.app.config]
config = "{config}"
experiment = "toy"
out = "{out}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_programs(folder: Path) -> None:
    folder.mkdir()
    for name, target in ENTRY_POINTS.items():
        module, function = target.split(":")
        script = folder / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
            f"sys.exit({function}())\n"
        )
        script.chmod(0o755)


def stop(processes: list[subprocess.Popen]) -> None:
    """End each process's session (the SuperExec and app processes it started), politely
    first: the SuperLink and SuperNodes take a few seconds to shut down."""
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_superlink_and_supernodes_train_as_the_in_process_run(tmp_path):
    items, pairs = write_sites(tmp_path, THREE_LABS[:12])  # sites a and b
    experiment = make_experiment(rounds=2, min_sites=2, bank=BANK)
    # One torch thread here as in the deployed processes (OMP_NUM_THREADS=1 below): sums
    # split over other thread counts round differently, and the weights must match bit for bit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        federated.federate(Experiment.from_dict(experiment), items, pairs, tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(experiment_as_config(experiment)))
    flower_programs(tmp_path / "bin")
    (tmp_path / "home").mkdir()
    (tmp_path / "app").mkdir()
    port = free_port()
    (tmp_path / "home" / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{port}"\n'
        "insecure = true\n"
    )
    (tmp_path / "app" / "pyproject.toml").write_text(
        APP.format(config=config, out=tmp_path / "deployed")
    )
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "FLWR_HOME": str(tmp_path / "home"),
        # The toy pair builder lives in tests/test_train.py.
        "PYTHONPATH": str(Path(__file__).parent),
        "OMP_NUM_THREADS": "1",
    }
    log = (tmp_path / "processes.log").open("w")
    link = ["flower-superlink", "--insecure", "--port", str(port)]
    node = ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}"]
    processes = [
        subprocess.Popen(
            [*link, "--disable-runtime-dependency-installation"],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    ]
    try:
        for name in ("a", "b"):
            site = tmp_path / "local" / "sites" / name
            node_config = (
                f"site='{name}' config='{config}' experiment='toy' items='{site / 'items'}' "
                f"pairs='{site / 'pairs.parquet'}' state-dir='{tmp_path / 'states' / name}'"
            )
            processes.append(
                subprocess.Popen(
                    [*node, "--port", str(free_port()), "--node-config", node_config],
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )
        run = subprocess.run(
            ["flwr", "run", str(tmp_path / "app"), "test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        deadline = time.monotonic() + 600
        while not (tmp_path / "deployed" / "model.pt").exists():
            assert time.monotonic() < deadline, (tmp_path / "processes.log").read_text()[-3000:]
            time.sleep(2)
    finally:
        stop(processes)
        log.close()
    assert_same_weights(tmp_path / "local" / "model.pt", tmp_path / "deployed" / "model.pt")
    rounds = (tmp_path / "deployed" / "rounds.jsonl").read_text()
    assert rounds == (tmp_path / "local" / "rounds.jsonl").read_text()
