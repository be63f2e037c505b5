"""The refusal table of docs/behaviour.md says what `intake/answers.py` does: each refusal a
client can meet is listed once, under the status the service answers it with."""

from __future__ import annotations

import re
from pathlib import Path

from service import refusals
from service.intake.answers import CATALOGUE

BEHAVIOUR = Path(__file__).resolve().parents[2] / "docs" / "behaviour.md"
TABLE_HEADER = "| status | refusal (`service/refusals.py`) | when |"


def documented_statuses() -> dict[str, int]:
    """{refusal class name: the status its row gives}, from the table in docs/behaviour.md."""
    lines = BEHAVIOUR.read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and its --- line
    found: dict[str, int] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        status, names = line.split("|")[1:3]
        for name in re.findall(r"`(\w+)`", names):
            assert name not in found, f"{name} is listed twice"
            found[name] = int(status.split()[0])
    return found


def test_every_refusal_is_documented_under_the_status_it_is_answered_with() -> None:
    classes = [cls for cls in vars(refusals).values() if isinstance(cls, type)]
    leaves = [
        cls for cls in classes if issubclass(cls, refusals.Refusal) and not cls.__subclasses__()
    ]
    assert set(leaves) <= set(CATALOGUE), "a refusal the catalogue does not answer"
    answered = {cls.__name__: answer.status for cls, answer in CATALOGUE.items()}
    documented = documented_statuses()
    differ = sorted(
        name for name in {*answered, *documented} if answered.get(name) != documented.get(name)
    )
    assert not differ, f"docs/behaviour.md's refusal table and CATALOGUE differ on {differ}"
