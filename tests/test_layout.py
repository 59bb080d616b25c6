"""The code's shape: every rule's entry point is a stage, scripts hold no logic, the library imports no stage."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from slmrec.workflow import stage_of

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "workflow_scripts" / "run_stage.py"


def rule_scripts() -> dict[str, str]:
    """Rule name -> the script its `script:` directive names, read from rules/*.smk."""
    found = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for rule, script in re.findall(
            r"^rule (\w+):.*?script:\s*\n\s*\"\.\./workflow_scripts/(\w+\.py)\"", smk.read_text(), flags=re.S | re.M
        ):
            found[rule] = script
    return found


def rules() -> list[str]:
    """Every rule of rules/*.smk, `use rule ... as` ones included."""
    text = "".join(smk.read_text() for smk in sorted((ROOT / "rules").glob("*.smk")))
    return re.findall(r"^rule (\w+):", text, flags=re.M) + re.findall(r"^use rule \w+ as (\w+)", text, flags=re.M)


def test_every_rule_runs_its_stage_through_the_one_script():
    assert [p.name for p in (ROOT / "workflow_scripts").glob("*.py")] == [SCRIPT.name]
    tree = ast.parse(SCRIPT.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [ast.unparse(c) for c in calls] == ["run_stage(snakemake)"], "the script holds no logic"
    assert set(rule_scripts().values()) == {SCRIPT.name}
    for rule in rules():
        stage = importlib.import_module(f"slmrec.stages.{stage_of(rule)}")
        assert callable(stage.run), rule


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
