"""One stage call and its run identity: what Snakemake hands a stage, and what makes a run this run.

A rule passes a stage its inputs, its outputs, its `params:` (exactly the settings the stage reads)
and its resources (how it runs, never what it computes). From the params and the content of the
inputs, one `RunIdentity` derives everything that must agree:
- the `config` and input checksums recorded in the stage's manifest;
- the fingerprint stamped beside a training stage's checkpoints;
- the resume decision: a killed run resumes only under the same identity.
Snakemake decides reruns from the same params, so the three can no longer disagree.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slmrec import layout
from slmrec.config import canonical
from slmrec.io import read_json, sha256_file, utc_now, write_json, write_manifest

# A directory input (a backbone checkpoint) is identified by its file names and sizes, and by the content
# of its smaller files (config, tokenizer, manifest): hashing every shard of a 7B model would cost minutes.
DIRECTORY_HASH_LIMIT = 64 << 20


def _paths(value: Any) -> Iterator[str]:
    if isinstance(value, str | os.PathLike):
        yield str(value)
    else:
        for item in value:
            yield from _paths(item)


def directory_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        size = file.stat().st_size
        content = sha256_file(file) if size <= DIRECTORY_HASH_LIMIT else "-"
        digest.update(f"{file.relative_to(path)}\0{size}\0{content}\n".encode())
    return digest.hexdigest()


def digest(path: str | os.PathLike) -> str:
    return directory_digest(path) if Path(path).is_dir() else sha256_file(path)


@dataclass(frozen=True)
class RunIdentity:
    """The params a rule passed and the content of its inputs (input name -> checksums of its files)."""

    params: dict[str, Any]
    inputs: dict[str, list[str]]

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params, "inputs": self.inputs}

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunIdentity:
        data = read_json(path)
        return cls(data.get("params", {}), data.get("inputs", {}))

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_json())

    def changes(self, before: RunIdentity) -> list[str]:
        """What differs from `before`, as the dotted setting keys and input names a log can name."""
        names = sorted(set(before.inputs) | set(self.inputs))
        changed_inputs = [f"input {name}" for name in names if before.inputs.get(name) != self.inputs.get(name)]
        return _changed_keys(before.params, self.params) + changed_inputs


def _changed_keys(before: Any, after: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        return [c for k in keys for c in _changed_keys(before.get(k), after.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if before != after else []


@dataclass
class StageCall:
    """What a stage receives from its rule: named inputs and outputs, params and resources (plain data,
    so a call can travel to torchrun workers as JSON)."""

    stage: str
    input: dict[str, Any]
    output: dict[str, str]
    params: dict[str, Any]
    resources: dict[str, Any] = field(default_factory=dict)
    wildcards: dict[str, str] = field(default_factory=dict)  # the dataset and target the job was run for
    started: str = field(default_factory=utc_now)

    @classmethod
    def from_snakemake(cls, snakemake: Any, stage: str) -> StageCall:
        resources = {k: v for k, v in snakemake.resources.items() if not k.startswith("_")}
        return cls(
            stage=stage,
            input={k: v if isinstance(v, str) else list(v) for k, v in snakemake.input.items()},
            output=dict(snakemake.output.items()),
            params=canonical(dict(snakemake.params.items())),
            resources=resources,
            wildcards=dict(snakemake.wildcards.items()),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def input_paths(self) -> list[str]:
        return [path for value in self.input.values() for path in _paths(value)]

    def identity(self) -> RunIdentity:
        return RunIdentity(self.params, {name: [digest(p) for p in _paths(v)] for name, v in self.input.items()})

    def write_directory_manifest(self, directory: str) -> dict[str, Any]:
        """The manifest of a directory artifact, inside it once it is in place (made under a temporary name, its
        files would otherwise be recorded where they no longer are)."""
        outputs = sorted(str(p) for p in Path(directory).iterdir() if p.is_file() and p.name != layout.MANIFEST)
        return self.write_manifest(path=str(Path(directory) / layout.MANIFEST), outputs=outputs)

    def write_manifest(
        self, path: str | None = None, outputs: list[str] | None = None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The stage's manifest: its params as `config`, its file inputs, its outputs (all but the manifest), and
        what it was made for (where it was written, the dataset and target), so a copy elsewhere is told apart."""
        path = path or self.output["manifest"]
        files = [p for p in self.input_paths() if Path(p).is_file()]
        directories = {p: directory_digest(p) for p in self.input_paths() if Path(p).is_dir()}
        if outputs is None:
            outputs = [p for name, p in self.output.items() if name != "manifest" and Path(p).is_file()]
        return write_manifest(
            path,
            stage=self.stage,
            config=self.params,
            inputs=files,
            outputs=outputs,
            started=self.started,
            extra={
                "made_for": {"manifest": path, "wildcards": self.wildcards},
                **({"input_directories": directories} if directories else {}),
                **(extra or {}),
            },
        )
