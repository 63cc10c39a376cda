"""The Snakefile's parse-time helpers, called in this process.

``tests/test_workflow.py`` shows through Snakemake that a component the parse-time check
rejects stops the run before any job; the check's own messages are tested here, without a
Snakemake process per message.
"""

from __future__ import annotations

import pytest
from conftest import minimal_experiment

from scicontrast.config import validate_config
from scicontrast.errors import UnknownComponentError
from scicontrast.workflow import check_components


def test_bad_component_params_fail_naming_the_config_key():
    encoder = {"name": "dna_cnn", "params": {"no_such_option": 1}}
    config = validate_config({"experiments": {"tiny": minimal_experiment(encoder=encoder)}})
    with pytest.raises(UnknownComponentError, match="no_such_option") as failure:
        check_components(config)
    assert str(failure.value).startswith("experiments.tiny.encoder: encoder 'dna_cnn': bad params")
