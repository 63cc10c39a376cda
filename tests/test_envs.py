"""The conda environment files parse and list what pyproject.toml depends on."""

import re

import tomllib
import yaml
from conftest import REPO

# conda-forge names for PyPI distributions whose names differ
CONDA_NAME = {
    "torch": "pytorch",
    "torch-geometric": "pytorch_geometric",
    "snakemake": "snakemake-minimal",
    "matplotlib": "matplotlib-base",
    "igraph": "python-igraph",
    "soundfile": "pysoundfile",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].strip().lower()


def test_env_files_parse_and_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # The workflow's export step writes ONNX files, so its env holds the `export` extra.
    dependencies = project["dependencies"] + project["optional-dependencies"]["export"]
    wanted = {CONDA_NAME.get(_name(d), _name(d)) for d in dependencies}
    env_files = sorted((REPO / "envs").glob("*.yaml"))
    assert env_files
    for path in env_files:
        env = yaml.safe_load(path.read_text())
        assert env["channels"][0] == "conda-forge"
        listed = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
        assert wanted <= listed, f"{path.name} lacks {sorted(wanted - listed)}"


def test_every_rule_names_an_existing_env_file():
    for smk in (REPO / "workflows").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        envs = re.findall(r'conda:\n\s+"([^"]+)"', text)
        assert len(envs) == len(rules), f"{smk.name}: a rule has no conda: directive"
        for env in envs:
            assert (smk.parent / env).resolve().exists(), f"{smk.name}: {env} missing"
