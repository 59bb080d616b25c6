"""Trace a result back through the manifests of the stages that made it, and flag stale inputs.

Every stage writes a manifest with the sha256 of its inputs and outputs. Indexing manifests by the
outputs they record gives, for any file, the stage that made it; following its inputs gives the chain.
An input whose file has changed since (or vanished) is flagged, as is any output of a visited manifest
that no longer matches: a result is not up to date while a file made beside it (say the item table
next to SASRec's metrics) is truncated.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmrec.io import sha256_file


@dataclass
class Link:
    path: str
    manifest: Path | None
    record: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    inputs: list[Link] = field(default_factory=list)


def index_manifests(root: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Map each recorded output path to the manifest that records it."""
    index = {}
    for path in sorted(root.rglob("*manifest.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for output in record.get("outputs", {}):
            index[str(Path(output))] = (path, record)
    return index


def _check(path: str, expected: str) -> str | None:
    if not Path(path).exists():
        return f"{path} is missing"
    actual = sha256_file(path)
    return (
        None
        if actual == expected
        else f"{path} changed since it was recorded (sha256 {actual[:12]} != {expected[:12]})"
    )


def trace(target: str | Path, root: str | Path = "results") -> Link:
    index = index_manifests(Path(root))
    seen: dict[str, Link] = {}
    check = functools.cache(_check)  # a file is input or output of several manifests: hash it once

    def visit(path: str) -> Link:
        key = str(Path(path))
        if key in seen:
            return seen[key]
        manifest, record = index.get(key, (None, None))
        link = Link(key, manifest, record)
        seen[key] = link
        if record is None:
            return link
        for output, digest in record["outputs"].items():
            problem = check(str(Path(output)), digest)
            if problem:
                link.problems.append(f"output {problem}; rerun: snakemake --cores 1 --force {output}")
        for source, digest in record.get("inputs", {}).items():
            problem = check(source, digest)
            if problem:
                link.problems.append(f"stale input: {problem}")
            link.inputs.append(visit(source))
        return link

    return visit(str(target))


def render(link: Link, depth: int = 0, shown: set[str] | None = None) -> list[str]:
    shown = set() if shown is None else shown
    pad = "  " * depth
    if link.record is None:
        return [f"{pad}{link.path}  (source file, no manifest)"]
    if link.path in shown:
        return [f"{pad}{link.path}  (see above)"]
    shown.add(link.path)
    code = link.record.get("code", {})
    lines = [
        f"{pad}{link.path}",
        f"{pad}  made by stage {link.record['stage']!r} at {link.record.get('finished')} on {link.record.get('host')}, "
        f"code {str(code.get('commit'))[:10]}{' (dirty)' if code.get('dirty') else ''}; manifest {link.manifest}",
    ]
    lines += [f"{pad}  !! {problem}" for problem in link.problems]
    for source in link.inputs:
        lines += render(source, depth + 1, shown)
    return lines


def stale(link: Link) -> bool:
    seen: set[int] = set()
    stack = [link]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.problems:
            return True
        stack.extend(node.inputs)
    return False
