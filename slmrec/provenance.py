"""Trace a result back through the manifests of the stages that made it, and flag stale inputs.

Every stage writes a manifest with the sha256 of its inputs and outputs. Indexing manifests by the
outputs they record gives, for any file, the stage that made it; following its inputs gives the chain.
An input whose file has changed since (or vanished) is flagged, as is any output of a visited manifest
that no longer matches: a result is not up to date while a file made beside it (say the item table
next to SASRec's metrics) is truncated. Given the current config, each manifest's recorded settings are
compared with it, and those that differ are listed.

A manifest is trusted only where it belongs: one copied from another dataset or target (it records where it was
written), and one that names an output outside the results directory, are flagged and not followed; a file
under the results directory that no manifest records (its manifest deleted, or the file put there by hand) is
flagged too. Each flagged link names the file whose forced rerun refreshes it (`refresh`), so the summary can
give the one command that does.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmrec import layout, rule_params
from slmrec.config import SCHEMA_PATH, load_schema
from slmrec.errors import ConfigError
from slmrec.io import sha256_file


@dataclass
class Link:
    path: str
    manifest: Path | None
    record: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    inputs: list[Link] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # recorded settings the current config sets otherwise
    refresh: list[str] = field(default_factory=list)  # files whose forced rerun refreshes this link


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys: {"distill": {"l2_weight": 0.1}} -> {"distill.l2_weight": 0.1}."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def config_changes(
    manifest: Path, record: dict[str, Any], root: Path, config: dict[str, Any], schema: dict[str, Any]
) -> list[str]:
    """`key: recorded X, now Y` for each setting the manifest recorded that the current config sets otherwise."""
    try:
        dataset = manifest.relative_to(root).parts[0]
    except ValueError:
        return []
    if dataset not in config["datasets"]:
        return [f"dataset {dataset!r} is not in the current config"] if dataset != "backbones" else []
    recorded = record.get("config", {})
    changes = []
    for param, value in recorded.items():
        try:
            current = rule_params.current(config, schema, dataset, record["stage"], param, recorded.get("target"))
        except (ConfigError, ValueError) as err:
            return [f"the current config cannot be compared: {err}"]
        if current is None:
            continue
        name = "teacher.layers" if param == "layers" else param  # a teacher's depth, as config.yaml names it
        now = flatten(current, f"{name}.")
        for key, was in flatten(value, f"{name}.").items():
            if was != {} and now.get(key, "(not set)") != was:
                changes.append(f"{key}: recorded {was!r}, now {now.get(key, '(not set)')!r}")
    return changes


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest's record; an unreadable one records nothing (what it described is then flagged as unrecorded)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def inside(path: str | Path, root: Path) -> bool:
    """Whether `path` lies under `root`, links resolved: a manifest is trusted only about files there."""
    return Path(path).resolve().is_relative_to(root.resolve())


def index_manifests(root: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Map each recorded output path to the manifest that records it (only paths inside `root`, and never to a
    manifest copied in from elsewhere, which records another place's outputs)."""
    index = {}
    for path in sorted(root.rglob("*manifest.json")):
        record = read_manifest(path)
        for output in record.get("outputs", {}):
            if inside(output, root):
                index[str(Path(output))] = (path, record)
    return index


def misplaced(manifest: Path, record: dict[str, Any], root: Path) -> str | None:
    """Why a manifest does not describe the files where it lies (copied from another dataset or target), or None.

    A manifest records where it was written and the job's wildcards; one from before that record is judged by
    its outputs, which must lie in the manifest's own dataset directory."""
    made_for = record.get("made_for")
    if made_for:
        if Path(made_for["manifest"]).resolve() == manifest.resolve():
            return None
        made = ", ".join(f"{k} {v}" for k, v in made_for.get("wildcards", {}).items())
        return f"manifest {manifest} was made for {made_for['manifest']} ({made}): a copy from elsewhere"
    home = root / manifest.resolve().relative_to(root.resolve()).parts[0]
    away = [o for o in record.get("outputs", {}) if inside(o, root) and not inside(o, home)]
    return (
        f"manifest {manifest} records outputs of another dataset ({away[0]}): a copy from elsewhere" if away else None
    )


def _check(path: str, expected: str) -> str | None:
    if not Path(path).exists():
        return f"{path} is missing"
    actual = sha256_file(path)
    return (
        None
        if actual == expected
        else f"{path} changed since it was recorded (sha256 {actual[:12]} != {expected[:12]})"
    )


def trace(target: str | Path, root: str | Path = "results", config: dict[str, Any] | None = None) -> Link:
    """The chain of manifests behind `target`; with `config` (the current one, as `load_config` gives it),
    each link also lists the recorded settings that config sets otherwise."""
    base = Path(root)
    index = index_manifests(base)
    schema = load_schema(SCHEMA_PATH)
    seen: dict[str, Link] = {}
    check = functools.cache(_check)  # a file is input or output of several manifests: hash it once

    def visit(path: str, read_by: str | None = None) -> Link:
        key = str(Path(path))
        if key in seen:
            return seen[key]
        manifest, record = index.get(key, (None, None))
        link = Link(key, manifest, record)
        seen[key] = link
        if record is None and inside(key, base) and Path(key).exists():  # a missing one is flagged by its reader
            beside = Path(key).parent / layout.MANIFEST
            foreign = misplaced(beside, read_manifest(beside), base) if beside.is_file() else None
            if foreign or read_by:  # a report or a log is read by no stage, and has no manifest of its own
                link.problems.append(
                    foreign
                    or f"no manifest under {root} records {key}, which {read_by} read: its manifest is missing, or "
                    "the file was made by hand"
                )
                link.refresh.append(key)
        if record is None or manifest is None:
            return link
        foreign = misplaced(manifest, record, base)
        if foreign:
            link.problems.append(foreign)
            link.refresh.append(key)
            return link
        if config is not None:
            link.changes = config_changes(manifest, record, base, config, schema)
        for output, digest in record["outputs"].items():
            if not inside(output, base):
                link.problems.append(f"manifest {manifest} names an output outside {root}: {output} (not read)")
                link.refresh.append(key)
                continue
            problem = check(str(Path(output)), digest)
            if problem:
                link.problems.append(f"output {problem}")
                link.refresh.append(str(Path(output)))
        for source, digest in record.get("inputs", {}).items():
            problem = check(source, digest)
            if problem:
                link.problems.append(f"stale input: {problem}")
                link.refresh.append(key)
            link.inputs.append(visit(source, f"stage {record['stage']!r}"))
        return link

    return visit(str(target))


def render(link: Link, depth: int = 0, shown: set[str] | None = None) -> list[str]:
    shown = set() if shown is None else shown
    pad = "  " * depth
    if link.record is None:
        return [f"{pad}{link.path}  (source file, no manifest)", *(f"{pad}  !! {p}" for p in link.problems)]
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
    lines += [f"{pad}  ~ {change}" for change in link.changes]
    for source in link.inputs:
        lines += render(source, depth + 1, shown)
    return lines


def nodes(link: Link) -> Iterator[Link]:
    """Every link of the chain once (a file is the input of several stages)."""
    seen: set[int] = set()
    stack = [link]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            yield node
            stack.extend(node.inputs)


def stale(link: Link) -> bool:
    return any(node.problems for node in nodes(link))


def refresh_command(link: Link, configfiles: list[str]) -> str:
    """The Snakemake command that refreshes a stale chain, under the same `--configfile`s: rerun what made each
    flagged file, and everything after it, up to the traced result (a plain rerun does not rebuild a deleted
    intermediate whose results downstream still look up to date)."""
    files = dict.fromkeys(f for node in nodes(link) for f in node.refresh)
    overlays = f" --configfile {' '.join(configfiles)}" if configfiles else ""
    return f"snakemake --cores 1 {link.path}{overlays} --forcerun {' '.join(files)}"


def changed(link: Link) -> int:
    """How many recorded settings of the chain the current config sets otherwise."""
    return sum(len(node.changes) for node in nodes(link))
