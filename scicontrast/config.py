"""Loading and validating the workflow configuration.

``config.yaml`` declares named experiments (see ``schemas/config.schema.yaml``). The same
schema validates the file in the Snakefile (``snakemake.utils.validate``) and in every CLI
step, fills in defaults, and rejects a wrong key or type before any work starts, naming the
file and the key.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from scicontrast.errors import ConfigError

SCHEMA_PATH = Path(str(resources.files("scicontrast") / "schemas" / "config.schema.yaml"))


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _validator_with_defaults():
    """A Draft 2020-12 validator that also fills ``default:`` values, as Snakemake's does."""
    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = json.loads(json.dumps(subschema["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` against the schema, fill defaults, and return a private copy.

    Raises ``ConfigError`` naming ``source`` and the offending key, for example
    ``config.yaml: experiments.dna_demo.training.epochs: 'ten' is not of type 'integer'``.
    """
    config = json.loads(json.dumps(config))  # a private copy: defaults must not share objects
    validator = _validator_with_defaults()(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        message = error.message
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            if allowed:
                message += f"; allowed keys here: {', '.join(allowed)}"
        if _reads_as_number(error.instance) and error.validator == "type":
            message += (
                "; YAML 1.1 reads an exponent as a number only with a decimal point and a "
                f"signed exponent: write {yaml_float(float(error.instance))}"
            )
        raise ConfigError(f"{source}: {_key_path(error)}: {message}")
    return config


def yaml_float(value: float) -> str:
    """``value`` spelled so that a YAML 1.1 reader reads a float: ``1e-05`` -> ``1.0e-05``.

    YAML 1.1 (PyYAML) reads ``d.d[eE][+-]d`` as a number but ``1e6``, ``1.0e6`` and ``1e-5``
    as text, so the mantissa needs a point and the exponent a sign.
    """
    mantissa, e, exponent = repr(float(value)).partition("e")
    if not e:
        return mantissa  # 1000000.0, which YAML reads as a float
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[0] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}"


def _reads_as_number(value: Any) -> bool:
    """Whether ``value`` is text Python reads as a finite float (YAML 1.1 reads 1e-5 as text)."""
    if not isinstance(value, str):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file and validate it."""
    path = Path(path)
    try:
        text = path.read_text()
        # JSON (written by resolve-config) is not quite YAML: json.dumps writes 1e-05, which
        # YAML 1.1 reads as a string.
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with an 'experiments' key")
    return validate_config(data, source=str(path))


def select_experiment(config: dict[str, Any], name: str | None, source: str) -> dict[str, Any]:
    """Return the validated experiment ``name`` (optional when the config has just one).

    The returned dict carries its own name under ``"name"``.
    """
    experiments = config["experiments"]
    if name is None:
        if len(experiments) != 1:
            raise ConfigError(
                f"{source}: declares {len(experiments)} experiments "
                f"({', '.join(experiments)}); choose one with --experiment"
            )
        name = next(iter(experiments))
    if name not in experiments:
        raise ConfigError(f"{source}: no experiment {name!r}; declared: {', '.join(experiments)}")
    return {"name": name, **experiments[name]}


def load_experiment(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """Read ``path``, validate it, and return one experiment's settings (defaults filled)."""
    return select_experiment(read_config_file(path), name, str(path))


def experiment_as_config(experiment: dict[str, Any]) -> dict[str, Any]:
    """Wrap one experiment (as returned by ``load_experiment``) back into a full config."""
    body = {k: v for k, v in experiment.items() if k != "name"}
    return {"experiments": {experiment["name"]: body}}
