"""The compose `.env` holds the service password: every step the docs give for making it
from `.env.example` leaves it readable by its owner only."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

from conftest import DEPLOY

# A shell step that makes .env from .env.example, as written in a document (after "$ ",
# "# " or "cd deploy && "), up to a comment.
STEP = re.compile(r"(?:^|&& |#\s+)((?:cp|install)\b[^#\n]*\.env\.example\s+\.env)\b", re.M)
DOCUMENTS = (DEPLOY / "README.md", DEPLOY / "docker-compose.yml", DEPLOY / ".env.example")


def steps() -> list[tuple[Path, str]]:
    return [(path, step) for path in DOCUMENTS for step in STEP.findall(path.read_text())]


def test_every_documented_step_makes_an_env_only_its_owner_can_read(tmp_path: Path) -> None:
    found = steps()
    assert {path.name for path, _ in found} >= {"README.md", "docker-compose.yml"}
    shutil.copy(DEPLOY / ".env.example", tmp_path / ".env.example")
    for path, step in found:
        (tmp_path / ".env").unlink(missing_ok=True)
        subprocess.run(["sh", "-c", f"umask 022 && {step}"], cwd=tmp_path, check=True)
        mode = stat.S_IMODE(os.stat(tmp_path / ".env").st_mode)
        assert mode == 0o600, f"{path.name}: {step!r} makes .env with mode {mode:o}"
