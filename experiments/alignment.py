"""Does distillation move the student's states towards the teacher's? Measure it on a finished dataset.

    .venv/bin/python experiments/alignment.py [--results results] [--dataset ml100k] [--batch-size 64]

Run from the directory the results were computed in (model configs name the backbone by a relative
path). For every trained teacher with cached states (`results/<dataset>/<teacher>/states.safetensors`),
it compares with the teacher's states, block by block on the students' training samples:
- the 4-layer student as it starts (backbone layers, fresh projections, the student's seed);
- every student distilled from that teacher (found from the students' manifests);
- every student that learned without a teacher (the CE-only ablation student), the control.
It writes `results/<dataset>/alignment.json` (or `--out`), which experiments/summarize.py turns into a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from slmrec import layout
from slmrec.data.samples import NextItemDataset, load_training_data
from slmrec.io import read_json, write_json
from slmrec.models.blocks import block_boundaries
from slmrec.models.distill import TeacherStates, state_alignment
from slmrec.models.llmrec import LLMRecConfig, build_llmrec, load_llmrec
from slmrec.models.sasrec import load_item_embeddings


def student_manifests(dataset_dir: Path) -> dict[Path, dict[str, Any]]:
    """Every finished student under the dataset, by its directory."""
    manifests = {path.parent: read_json(path) for path in sorted(dataset_dir.rglob(layout.MANIFEST))}
    metrics = layout.SCORED["metrics"]
    return {d: m for d, m in manifests.items() if m["stage"] == "student" and (d / metrics).exists()}


def states_read(manifest: dict[str, Any], workdir: Path) -> list[Path]:
    """The teacher states a student was distilled from (none for a student trained without a teacher)."""
    states = Path(layout.states("{teacher}")).name
    return [(workdir / p).resolve() for p in manifest["inputs"] if p.endswith(states)]


def align_with_teacher(
    states_path: Path, students: dict[Path, dict[str, Any]], data: Any, table: Any, workdir: Path, batch_size: int
) -> dict[str, Any] | None:
    """The rows of one teacher: the untrained student, its distilled students, then the teacher-free ones."""
    own = [d for d, m in students.items() if states_path.resolve() in states_read(m, workdir)]
    if not own:
        return None
    control = [d for d, m in students.items() if not states_read(m, workdir)]
    states = TeacherStates.load(states_path)
    samples = read_json(states_path.with_name(Path(layout.states("{teacher}", "manifest")).name))["config"]["samples"]
    dataset = NextItemDataset(data.sequences, samples["max_len"], samples["targets_per_user"])
    settings = students[own[0]]["config"]
    config = LLMRecConfig.from_dict(read_json(own[0] / layout.LLM_FILES["config"]))
    blocks = settings["distill"]["blocks"]
    boundaries = block_boundaries(states.teacher_layers, config.layers, blocks)
    states.check(states_path, dataset.input_ids, dataset.labels, boundaries)
    models = [
        (f"untrained {config.layers}-layer student", lambda: build_llmrec(config, table, settings["student"]["seed"]))
    ]
    for directory in [*own, *control]:
        name = read_json(directory / layout.SCORED["metrics"])["model"]
        models.append((name, lambda d=directory: load_llmrec(d, table)))
    rows = [
        {"model": name, "blocks": state_alignment(build(), states, dataset.input_ids, blocks, batch_size)}
        for name, build in models
    ]
    return {"teacher_layers": states.teacher_layers, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--dataset", default="ml100k")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, help="default: results/<dataset>/alignment.json")
    args = parser.parse_args()
    dataset_dir = Path(layout.dataset_dir(args.dataset, args.results))
    inputs = layout.data_inputs(args.dataset, args.results)
    if not Path(inputs["splits"]).exists():
        raise SystemExit(
            f"{dataset_dir}: no finished dataset there (expected {inputs['splits']}); run this from the "
            "directory the results were computed in, or pass --results and --dataset"
        )
    data = load_training_data(*inputs.values())
    table = load_item_embeddings(layout.item_embeddings(args.dataset, args.results), data.num_items)
    students = student_manifests(dataset_dir)
    teachers = {}
    for states_path in sorted(dataset_dir.glob(f"*/{Path(layout.states('{teacher}')).name}")):
        aligned = align_with_teacher(states_path, students, data, table, args.results.parent, args.batch_size)
        if aligned:
            teachers[states_path.parent.name] = aligned
    if not teachers:
        raise SystemExit(f"{dataset_dir}: no finished student was distilled from cached teacher states")
    out = args.out or dataset_dir / "alignment.json"
    write_json(out, {"dataset": args.dataset, "teachers": teachers})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
