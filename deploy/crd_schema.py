"""Validate custom resources against their CustomResourceDefinitions' schemas, strictly.

    python deploy/crd_schema.py --crd CRD.yaml [--crd ...] [--require KIND ...] FILE...

kubernetes-validate knows Kubernetes' own kinds only. This checks every document of FILE (a
multi-document YAML such as `kubectl kustomize` output) whose apiVersion and kind a CRD
defines against that version's openAPIV3Schema, as the API server does, strictly as `kubectl
apply --validate=strict` does: a field the schema does not declare is an error (the API
server would drop it without a word), unless the schema keeps unknown fields
(x-kubernetes-preserve-unknown-fields) or says what they may be (additionalProperties). Not
checked here: the CRD's CEL rules (x-kubernetes-validations) and list uniqueness
(x-kubernetes-list-type). Documents of other kinds are left to kubernetes-validate. Nothing
is fetched: the CRDs are files (deploy/vendor/).

Exit status 0 with one line per document checked; 1 with one line per problem, including a
--require'd kind of which FILE has no document.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# libyaml's parser when PyYAML was built with it: the Gateway API's CRD is 430 KB, which the
# pure-Python parser takes 0.4 s to read.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def documents(text: str) -> list[Any]:
    """The documents of a YAML text, empty ones left out."""
    return [document for document in yaml.load_all(text, Loader=LOADER) if document]


Schema = dict[str, Any]
Kind = tuple[str, str]  # (apiVersion, kind)


def strict(schema: Schema) -> Schema:
    """`schema` with `additionalProperties: false` wherever it declares properties and
    neither keeps unknown fields nor says what they may be."""
    out: Schema = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict(child) for child in value]
        else:
            out[key] = value
    keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in schema and "additionalProperties" not in schema and not keeps_unknown:
        out["additionalProperties"] = False
    return out


def crd_schemas(crds: Iterable[Schema]) -> dict[Kind, Schema]:
    """The strict schema of every served version of each CRD, by (apiVersion, kind)."""
    schemas: dict[Kind, Schema] = {}
    for crd in crds:
        if crd.get("kind") != "CustomResourceDefinition":
            raise ValueError(f"not a CustomResourceDefinition: {crd.get('kind')!r}")
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                api_version = f"{spec['group']}/{version['name']}"
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(api_version, spec["names"]["kind"])] = strict(schema)
    return schemas


def document_problems(document: Schema, schema: Schema) -> list[str]:
    """What the API server would refuse in `document`, one line each, by JSON path.
    OpenAPI 3.0's schemas are JSON Schema draft 4 (its boolean exclusiveMinimum)."""
    validator = jsonschema.Draft4Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.path))
    return [f"{error.json_path}: {error.message}" for error in errors]


def check(
    files: Sequence[Path], schemas: dict[Kind, Schema], required: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(documents checked, problems) for every document of `files` a CRD defines."""
    checked: list[str] = []
    problems: list[str] = []
    groups = {api_version.split("/")[0] for api_version, _ in schemas}
    seen: set[str] = set()
    for path in files:
        for document in documents(path.read_text()):
            kind, api_version = document.get("kind", ""), document.get("apiVersion", "")
            name = f"{path}: {kind} {document.get('metadata', {}).get('name', '?')}"
            schema = schemas.get((api_version, kind))
            if schema is None:
                if api_version.split("/")[0] in groups:
                    problems.append(f"{name}: no CRD here serves {kind} in {api_version}")
                continue
            seen.add(kind)
            found = document_problems(document, schema)
            problems += [f"{name}: {problem}" for problem in found]
            if not found:
                checked.append(f"{name}: valid against the {api_version} CRD schema (strict)")
    for kind in required:
        if kind not in seen:
            problems.append(f"no {kind} in {', '.join(map(str, files))}")
    return checked, problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crd", type=Path, action="append", required=True, help="a CRD file")
    parser.add_argument(
        "--require", action="append", default=[], help="a kind FILE must have (repeatable)"
    )
    parser.add_argument("files", type=Path, nargs="+", help="YAML files of resources")
    args = parser.parse_args(argv)
    crds = [doc for path in args.crd for doc in documents(path.read_text())]
    checked, problems = check(args.files, crd_schemas(crds), args.require)
    for line in checked:
        print(line)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
