"""The README's bring-your-own-data adapter works as printed."""

from __future__ import annotations

import re
import sys

import pandas as pd
import yaml
from conftest import REPO, run_cli


def readme_adapter_source() -> str:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(# my_lab/adapters\.py\n.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, "README should show one my_lab/adapters.py example"
    return blocks[0]


def test_readme_adapter_runs_through_prepare_and_pairs(tmp_path, monkeypatch):
    package = tmp_path / "my_lab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "adapters.py").write_text(readme_adapter_source())
    rng = __import__("numpy").random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACGT"), size=180)) for _ in range(6)]
    pd.DataFrame(
        {"id": [f"a{i}" for i in range(6)], "sequence": sequences, "sample": list("xxxyyy")}
    ).to_csv(tmp_path / "amplicons.tsv", sep="\t", index=False)
    config = {
        "experiments": {
            "amplicons": {
                "adapter": {
                    "name": "my_lab.adapters:AmpliconTable",
                    "params": {"path": str(tmp_path / "amplicons.tsv")},
                },
                "pairs": {"name": "dna_views"},
                "encoder": {"name": "dna_cnn"},
            }
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    # The lab's package is found on the path from the folder the command runs in.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_lab", raising=False)
    monkeypatch.delitem(sys.modules, "my_lab.adapters", raising=False)
    run = run_cli

    result = run("prepare", "--config", "config.yaml", "--out", "items")
    assert result.returncode == 0, result.stderr
    result = run("pairs", "--config", "config.yaml", "--items", "items", "--out", "pairs.parquet")
    assert result.returncode == 0, result.stderr
    assert len(pd.read_parquet(tmp_path / "pairs.parquet")) == 12

    short = pd.read_csv(tmp_path / "amplicons.tsv", sep="\t")
    short.loc[3, "sequence"] = "ACGT"
    short.to_csv(tmp_path / "amplicons.tsv", sep="\t", index=False)
    result = run("prepare", "--config", "config.yaml", "--out", "items2")
    assert result.returncode == 2
    assert "amplicons.tsv: line 5: sequence shorter than 150" in result.stderr
    assert not (tmp_path / "items2").exists()
