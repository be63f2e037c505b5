"""constraints.txt, which the Docker image installs, agrees with pyproject.toml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import deploy_script

checker = deploy_script("check_constraints")


def test_the_committed_constraints_pin_every_dependency_within_its_range() -> None:
    assert checker.main([]) == 0


@pytest.mark.parametrize(
    ("dependency", "pin", "allowed"),
    [
        ("aiohttp>=3.10,<4", "3.14.5", True),
        ("aiohttp>=3.10,<4", "4.0", False),
        ("aiohttp>=3.10,<4", "3.9.5", False),
        ("discord.py>=2.4,<3", "2.4", True),  # 2.4 == 2.4.0
        ("x~=2.4.1", "2.4.9", True),
        ("x~=2.4.1", "2.5.0", False),
        ("x~=2.4", "2.9", True),
        ("x~=2.4", "3.0", False),
        ("x==1.2.*", "1.2.7", True),
        ("x==1.2.*", "1.3", False),
        ("x!=1.2.*,>1", "1.2.1", False),
        ("x>=1 ; python_version < '3.13'", "1.0", True),
        ("x", "0.1", True),
    ],
)
def test_pins_are_checked_against_ranges(dependency: str, pin: str, allowed: bool) -> None:
    name = checker.parse_requirement(dependency)[0]
    assert (checker.problems([dependency], {name: pin}) == []) is allowed


def test_every_kind_of_disagreement_is_reported(tmp_path: Path) -> None:
    dependencies = ["aiohttp>=3.10,<4", "Discord_Py>=2.4", "tqdm>=4.66", "new>=1"]
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f"[project]\ndependencies = {json.dumps(dependencies)}\n")
    constraints = tmp_path / "constraints.txt"
    # discord-py is Discord_Py (PEP 503 names); tqdm is too old; `new` is missing.
    constraints.write_text("# pins\naiohttp==3.14.5\ndiscord-py==2.7.1\ntqdm==4.65.0\n")
    problems = checker.problems(
        dependencies, checker.parse_pins(constraints.read_text().splitlines())
    )
    assert len(problems) == 2
    assert "tqdm==4.65.0 is outside" in problems[0]
    assert "'new>=1' has no pin" in problems[1]
    assert checker.main(["--pyproject", str(pyproject), "--constraints", str(constraints)]) == 1


@pytest.mark.parametrize(
    "line", ["aiohttp>=3.10", "aiohttp==3.14.5\naiohttp==3.14.6", "aiohttp==3.14.5rc1"]
)
def test_pins_must_be_exact_plain_releases(line: str) -> None:
    try:
        pins = checker.parse_pins(line.splitlines())
    except ValueError:
        return
    # Parsed, so it must fail the check instead.
    assert checker.problems(["aiohttp>=3"], pins) != []
