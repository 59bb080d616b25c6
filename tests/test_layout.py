"""The code's shape: every rule's entry point is a stage, scripts hold no logic, the library imports no stage."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "workflow_scripts").glob("*.py"))
SCRIPT_SHAPE = re.compile(
    r'"""Rule `(\w+)`: [^\n]+"""\n\nfrom slmrec\.workflow import run_stage\n\nrun_stage\(snakemake, "(\w+)"\)\n'
)


def rule_scripts() -> dict[str, str]:
    """Rule name -> the script its `script:` directive names, read from rules/*.smk."""
    found = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for rule, script in re.findall(
            r"^rule (\w+):.*?script:\s*\n\s*\"\.\./workflow_scripts/(\w+)\.py\"", smk.read_text(), flags=re.S | re.M
        ):
            found[rule] = script
    return found


def test_every_rule_runs_a_stage_through_a_thin_script():
    scripts = rule_scripts()
    assert set(scripts) == {p.stem for p in SCRIPTS}, "one script per rule, named after it"
    for path in SCRIPTS:
        match = SCRIPT_SHAPE.fullmatch(path.read_text())
        assert match, f"{path.name} is not the three-line run_stage script"
        assert match.group(1) == match.group(2) == path.stem
        stage = importlib.import_module(f"slmrec.stages.{path.stem}")
        assert callable(stage.run), path.stem


@pytest.mark.parametrize("module", sorted(p for p in (ROOT / "slmrec").rglob("*.py") if p.parent.name != "stages"))
def test_the_library_imports_no_stage(module):
    tree = ast.parse(module.read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    allowed = module.name == "launch.py"  # it starts stages by name (importlib), importing none of them
    assert allowed or not [m for m in imported if m.startswith("slmrec.stages")], module


@pytest.mark.parametrize("module", sorted((ROOT / "slmrec" / "stages").glob("*.py")))
def test_no_stage_imports_another(module):
    tree = ast.parse(module.read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m.startswith("slmrec.stages")], module


def errors_table() -> list[tuple[str, list[str]]]:
    """README's "Errors" table: (bad input, the test node ids its row cites)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Errors\n") :].split("\n## ", 2)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Bad input")]
    return [(row.split(" | ")[0].lstrip("| "), re.findall(r"`(tests/[\w/]+\.py::\w+)", row)) for row in rows]


def test_the_readme_errors_table_cites_real_tests():
    """Every row of the README's Errors table names the tests that show it, and those tests exist."""
    rows = errors_table()
    assert len(rows) >= 20
    for bad_input, tests in rows:
        assert tests, f"README Errors row {bad_input!r} cites no test"
        for node in tests:
            path, name = node.split("::")
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.M), node


@pytest.mark.parametrize("module", ["test_bad_input.py", "test_bad_artifacts.py"])
def test_every_bad_input_test_is_in_the_readme_errors_table(module):
    cited = {node.split("::")[1] for _, tests in errors_table() for node in tests}
    defined = re.findall(r"^def (test_\w+)\(", (ROOT / "tests" / module).read_text(), flags=re.M)
    missing = [name for name in defined if name not in cited]
    assert not missing, f"tests/{module}: not in README's Errors table: {missing}"


def test_make_demo_ends_by_saying_where_the_report_is():
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe, "Makefile has no demo target"
    last = recipe.group(1).splitlines()[-1]
    assert last.lstrip("\t@").startswith("echo") and "results/demo/report.md" in last, last
