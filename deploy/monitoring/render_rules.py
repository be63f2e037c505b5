"""Wrap alerts.yaml in a Prometheus Operator PrometheusRule: prometheusrule.yaml.

    python deploy/monitoring/render_rules.py           # rewrite prometheusrule.yaml
    python deploy/monitoring/render_rules.py --check   # exit 1 if it is stale

A rule file's top level (`groups:`) is exactly a PrometheusRule's `spec`, so the rules are
copied in indented, text for text, and stay written (and promtool-tested) in one place.
Standard library only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE / "alerts.yaml"
OUTPUT = HERE / "prometheusrule.yaml"

HEADER = """\
# Rendered by deploy/monitoring/render_rules.py from alerts.yaml: edit that and re-render.
# Your Prometheus may select rules by a label (e.g. `release: <its Helm release>`): add it
# under metadata.labels.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: upload-service
  labels:
    app.kubernetes.io/name: upload-service
spec:
"""


def render(rules: str) -> str:
    """The PrometheusRule for a rule file's text; raise ValueError if it is not one."""
    body = [line for line in rules.splitlines() if line.strip() and not line.startswith("#")]
    if not body or body[0] != "groups:":
        raise ValueError("a rule file starts with `groups:` (after its comments)")
    if "\t" in rules:
        raise ValueError("a rule file is indented with spaces")
    # Comments included, blank lines left blank: YAML block scalars keep their meaning when
    # every line moves right by the same amount.
    return HEADER + "".join(f"  {line}\n" if line else "\n" for line in rules.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render(RULES.read_text())
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(
                f"{OUTPUT} is stale: run python deploy/monitoring/render_rules.py", file=sys.stderr
            )
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
