"""The README's claims: its component list is the registries', and its demo output is what the
default workflow prints, within the tolerance the README states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from scicontrast.registry import ADAPTERS, ENCODERS, PAIR_BUILDERS, Registry

README = REPO / "README.md"
COMPONENTS_START = (
    "<!-- components: generated from scicontrast.registry, see tests/test_readme.py -->"
)
COMPONENTS_END = "<!-- end of components -->"
DEMO_START = "<!-- demo summary: results/dna_demo/metrics/summary.txt, see tests/test_readme.py -->"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def builtin_names(registry: Registry) -> list[str]:
    """The registry's names that this project ships (installed plug-ins are left out)."""
    return [
        name
        for name in registry.names()
        if registry.get(name).__module__.startswith("scicontrast.")
    ]


def component_table() -> str:
    """The README's component list as it must read, generated from the registries."""
    rows = [
        ("`adapter`", "reads raw files into items", ADAPTERS),
        ("`pairs`", "builds positive pairs and draws views", PAIR_BUILDERS),
        ("`encoder`", "the network whose output is the embedding", ENCODERS),
    ]
    lines = ["| config key | what | registered names |", "| --- | --- | --- |"]
    lines += [
        f"| {key} | {what} | {', '.join(f'`{name}`' for name in builtin_names(registry))} |"
        for key, what, registry in rows
    ]
    return "\n".join(lines)


def between(text: str, start: str, end: str) -> str:
    assert start in text, f"README.md lacks the marker {start!r}"
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_component_list_is_generated_from_the_registries():
    listed = between(README.read_text(), COMPONENTS_START, COMPONENTS_END)
    assert listed == component_table(), (
        "README.md's component list differs from the registries; paste this between its "
        f"markers:\n{component_table()}"
    )


def readme_demo_summary() -> str:
    block = README.read_text().split(DEMO_START, 1)[1]
    return re.search(r"```\n(.*?)```", block, flags=re.S).group(1)


def stated_tolerance() -> float:
    """The README's own words: 'each printed decimal within <tol> of the figures here'."""
    found = re.search(r"each\s+printed\s+decimal\s+within\s+([0-9.]+)\s+of", README.read_text())
    assert found, "README.md states no tolerance for its demo output"
    return float(found.group(1))


def numbers(line: str) -> list[tuple[str, float]]:
    """The numbers of a line, each with its scale: 100 for points and percentages."""
    return [
        (m.group(), 100.0 if re.match(r"\s*(%|points)", line[m.end() :]) else 1.0)
        for m in NUMBER.finditer(line)
    ]


def compare_summaries(printed: str, shown: str, tolerance: float) -> list[str]:
    """Lines where ``printed`` and ``shown`` differ beyond ``tolerance``.

    Each line must read the same once its numbers are blanked; integers (counts, dimensions,
    k) must be equal; decimals may differ by ``tolerance`` in the metric's units, i.e. by
    ``100 * tolerance`` where the summary prints points (hundredths) or percentages.
    """
    printed_lines, shown_lines = printed.strip().splitlines(), shown.strip().splitlines()
    if len(printed_lines) != len(shown_lines):
        return [f"{len(printed_lines)} lines printed, {len(shown_lines)} shown"]
    problems = []
    for mine, theirs in zip(printed_lines, shown_lines, strict=True):
        if NUMBER.sub("#", mine).split() != NUMBER.sub("#", theirs).split():
            problems.append(f"text differs:\n  printed {mine!r}\n  README  {theirs!r}")
            continue
        for (a, _), (b, scale) in zip(numbers(mine), numbers(theirs), strict=True):
            exact = "." not in a and "." not in b and scale == 1.0
            if (a != b) if exact else abs(float(a) - float(b)) > scale * tolerance + 1e-9:
                problems.append(f"{a} against {b}:\n  printed {mine!r}\n  README  {theirs!r}")
    return problems


def test_comparison_catches_drift():
    shown = "Embeddings: 3000 items\n  kNN  0.998 ± 0.002\n  beats it by +4.8 points, 9.4%"
    assert compare_summaries(shown.replace("0.998", "0.994"), shown, 0.005) == []
    assert compare_summaries(shown.replace("+4.8", "+5.2"), shown, 0.005) == []
    assert compare_summaries(shown.replace("9.4%", "9.8%"), shown, 0.005) == []
    assert compare_summaries(shown.replace("0.998", "0.990"), shown, 0.005)
    assert compare_summaries(shown.replace("+4.8", "+5.4"), shown, 0.005)
    assert compare_summaries(shown.replace("3000", "2999"), shown, 0.005)
    assert compare_summaries(shown.replace("beats", "trails"), shown, 0.005)
    assert compare_summaries(shown + "\nextra", shown, 0.005)


def dna_demo_summary(request: pytest.FixtureRequest) -> str:
    """The DNA demo's summary: the repository's own run of the default workflow if there is
    one, else the fresh run of the shipped config that the workflow tests read too
    (``dna_demo_run`` in conftest.py: the DNA demo alone, ``--cores 2``)."""
    target = Path("results/dna_demo/metrics/summary.txt")
    if (REPO / target).is_file():
        return (REPO / target).read_text()
    workdir, _ = request.getfixturevalue("dna_demo_run")
    return (workdir / target).read_text()


@pytest.mark.slow
def test_demo_summary_matches_the_readme(request):
    problems = compare_summaries(
        dna_demo_summary(request), readme_demo_summary(), stated_tolerance()
    )
    assert not problems, "\n".join(problems)
