"""The image's base: an exact Python on Debian's stable release, pinned by tag and digest, and
the same Python minor version as pyproject.toml's classifiers and the tests' own Python."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = re.compile(
    r"^FROM python:(?P<version>3\.(?P<minor>\d+)\.\d+)-slim-(?P<debian>[a-z]+)"
    r"@sha256:(?P<digest>[0-9a-f]{64})$",
    re.MULTILINE,
)
CLASSIFIER = re.compile(r"Programming Language :: Python :: 3\.(\d+)")


def base_minor() -> int:
    dockerfile = (ROOT / "Dockerfile").read_text()
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    [base] = [match for line in froms if (match := BASE.fullmatch(line))]
    assert len(froms) == 1, froms
    assert base["debian"] == "trixie", "the base should be Debian's stable release (13, trixie)"
    return int(base["minor"])


def test_the_base_is_pinned_by_exact_version_and_digest() -> None:
    # base_minor() finds the one FROM line only when it has both: tag x.y.z and @sha256.
    assert base_minor() >= 11


def test_image_classifiers_and_tests_run_one_python_minor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    classified = [
        int(match[1])
        for classifier in project.get("classifiers", [])
        if (match := CLASSIFIER.fullmatch(classifier))
    ]
    image = base_minor()
    assert classified == [image], (
        f"pyproject.toml's classifiers name Python 3.{classified}, the Dockerfile's base 3.{image}"
    )
    assert project["requires-python"] == f">=3.{image}"
    assert sys.version_info[:2] == (3, image), (
        f"the tests run on Python {sys.version_info.major}.{sys.version_info.minor}, "
        f"the image on 3.{image}: test with the Python the image ships"
    )
