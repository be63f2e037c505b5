"""constraints.txt, which the Docker image installs, pins every dependency of pyproject.toml
within its range, the versions compared by `packaging` as pip compares them (PEP 440), and
the build backend the image builds the project with. That the pins are complete is `pip
check`'s to say, after the image's `--no-deps` install (the Dockerfile, and .ci/run before
the tests)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pins(text: str) -> dict[str, Version]:
    """constraints.txt's `name==version` lines by canonical name; ValueError for any other."""
    found: dict[str, Version] = {}
    for line in filter(None, (line.split("#", 1)[0].strip() for line in text.splitlines())):
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in str(specifiers[0]):
            raise ValueError(f"{line!r} is not name==version")
        name = canonicalize_name(requirement.name)
        if name in found:
            raise ValueError(f"{name} is pinned twice")
        found[name] = Version(specifiers[0].version)
    return found


def disagreements(dependencies: list[str], pinned: dict[str, Version]) -> list[str]:
    """One sentence per dependency without a pin, or pinned outside its range."""
    problems = []
    for requirement in map(Requirement, dependencies):
        name = canonicalize_name(requirement.name)
        if name not in pinned:
            problems.append(f"{requirement} has no pin")
        elif not requirement.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{name}=={pinned[name]} is outside {requirement}")
    return problems


def test_the_committed_constraints_pin_every_dependency_within_its_range() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = pins((ROOT / "constraints.txt").read_text())
    assert disagreements(pyproject["project"]["dependencies"], pinned) == []


def test_the_image_builds_the_project_with_the_pinned_build_backend() -> None:
    """`pip install .` builds the project with pyproject's build-system requirements. In an
    isolated build environment (pip's default) it fetches them anew at every build, the
    newest in range, whatever constraints.txt says: a rebuild of the same commit could build
    with another setuptools, or fail. The image installs them from constraints.txt and builds
    without isolation, checking them (--check-build-dependencies)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = pins((ROOT / "constraints.txt").read_text())
    assert disagreements(pyproject["build-system"]["requires"], pinned) == []
    dockerfile = (ROOT / "Dockerfile").read_text()
    builds = re.findall(r"^RUN pip install (.*) \.(?: |$)", dockerfile, flags=re.MULTILINE)
    assert builds, "the Dockerfile does not install the project with `pip install ... .`"
    for options in builds:
        assert {"--no-build-isolation", "--check-build-dependencies"} <= set(options.split())


def test_a_missing_or_out_of_range_pin_is_named() -> None:
    # discord-py is Discord_Py (PEP 503 names); tqdm is too old; `new` is missing.
    pinned = pins("# pins\naiohttp==3.14.5\ndiscord-py==2.7.1\ntqdm==4.65.0\n")
    dependencies = ["aiohttp>=3.10,<4", "Discord_Py>=2.4", "tqdm>=4.66", "new>=1"]
    assert disagreements(dependencies, pinned) == [
        "tqdm==4.65.0 is outside tqdm>=4.66",
        "new>=1 has no pin",
    ]


@pytest.mark.parametrize(
    "text", ["aiohttp>=3.10", "aiohttp==3.*", "aiohttp==3.14.5\naiohttp==3.14.6"]
)
def test_a_pin_is_one_exact_version(text: str) -> None:
    with pytest.raises(ValueError, match="aiohttp"):
        pins(text)
