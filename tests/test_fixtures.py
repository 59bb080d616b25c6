"""The shared-build fixture helper: one build per session for every xdist worker, each worker with its copy."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import built_once


def test_a_shared_build_runs_once_and_each_caller_gets_its_own_copy(tmp_path_factory):
    builds: list[Path] = []

    def build(directory: Path) -> None:
        builds.append(directory)
        (directory / "result.txt").write_text("built")

    first, second = (built_once(tmp_path_factory, "once", build) for _ in range(2))
    assert len(builds) == 1 and first != second
    assert (first / "result.txt").read_text() == (second / "result.txt").read_text() == "built"
    (first / "result.txt").write_text("changed by a test")
    assert (second / "result.txt").read_text() == "built"


def test_a_failed_shared_build_fails_later_callers_at_once_with_its_error(tmp_path_factory):
    builds: list[Path] = []

    def build(directory: Path) -> None:
        builds.append(directory)
        pytest.fail("snakemake failed: no such rule")

    with pytest.raises(pytest.fail.Exception, match="no such rule"):
        built_once(tmp_path_factory, "broken", build)
    with pytest.raises(pytest.fail.Exception, match="broken failed to build in another worker:\nsnakemake failed"):
        built_once(tmp_path_factory, "broken", build)
    assert len(builds) == 1
