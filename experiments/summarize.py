"""Fill docs/experiments.md's generated tables from the ml100k_smollm2 experiment's results.

    .venv/bin/python experiments/summarize.py [--results results] [--doc docs/experiments.md]

Only the blocks between `<!-- name -->` markers are rewritten; the prose around them is kept. The
experiment's figures (the report rule's Figure 2 and training curves) are copied to docs/figures/.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from gemma3 import gemma3_blocks
from kd import kd_blocks

from slmrec import layout
from slmrec.io import atomic_path
from slmrec.summary import (
    Arm,
    DistillPair,
    PrecisionArms,
    Row,
    ablation_table,
    accuracy_table,
    alignment_table,
    efficiency_table,
    gate_table,
    layer_table,
    linked_figure,
    loss_balance,
    pair_comparisons,
    precision_table,
    replace_generated,
    row_comparisons,
    section_parser,
    validation_curves,
    wall_times,
)
from slmrec.targets import PAPER_VARIANTS, STUDENT, TEACHER, ablation_target, student_of, sweep_teacher, variant_label

BASE = "ml100k"
SEEDS = ("", "_s2", "_s3")
PRETRAINED = Arm("pretrained", (BASE, f"{BASE}_s2", f"{BASE}_s3"))
RANDOM = Arm("random init", (f"{BASE}_random", f"{BASE}_random_s2", f"{BASE}_random_s3"))
SEED1 = Arm("seed 1", (BASE,))
TARGETS_PROBE = Arm("ten targets per user", (f"{BASE}_targets10",))  # E4SRec_2, up to 10 targets per user
LONG_PROBE = Arm(  # the same with 600 steps, for each seed of the pretrained arm
    "10 targets per user, 600 steps", tuple(f"{BASE}_targets10_long{d[len(BASE) :]}" for d in PRETRAINED.datasets)
)
SEED2 = Arm("seed 2", (f"{BASE}_s2",))
STUDENTS_PROBE = Arm("students 400 steps", (f"{BASE}_s2_students400",))  # seed 2, students trained 400 steps
SWEEP = (1, 2, 4, 8, 16)  # and the deep teacher itself (experiments/ml100k_smollm2.yaml)
SHALLOW = 8  # the paper's SLMRec 4 <- 8 teacher
PRECISION = PrecisionArms(sweep_teacher(SHALLOW), SEEDS)  # experiments/ml100k_precision.yaml: E4SRec_8
# The fair test (experiments/ml100k_fair.yaml): its candidate pairs, gated on seed 1's validation.
FAIR = Arm("fair", tuple(f"{BASE}_fair{s}" for s in SEEDS))
FAIR_M1 = Arm("fair, 1-layer student", tuple(f"{BASE}_fair_m1{s}" for s in SEEDS))
FAIR_PAIRS = (
    DistillPair("1←2", FAIR_M1, sweep_teacher(2), student_of(2), sweep_teacher(1), FAIR.datasets[0]),
    DistillPair("4←8", FAIR, sweep_teacher(8), student_of(8), sweep_teacher(4), FAIR.datasets[0]),
    DistillPair("4←16", FAIR, TEACHER, STUDENT, sweep_teacher(4), FAIR.datasets[0]),
)
FAIR_SWEEP = (1, 2, 4, 8)  # and `teacher`, E4SRec_16
FIGURES = {  # the report rule's plots, by file stem
    "layer_sweep": "Figure 2: test metrics against layers, trained and direct",
    "training_curves": "Training curves: loss terms and validation MRR",
}


def fair_blocks(results: Path) -> dict[str, Callable[[], str]]:
    """The fair test's blocks of docs/experiments.md (experiments/fair.py fills them alone)."""
    seed1 = Arm("seed 1", FAIR.datasets[:1])
    rows = [
        Row(FAIR, "sasrec"),
        Row(seed1, "sasrec_authors"),
        *(Row(FAIR, sweep_teacher(n)) for n in FAIR_SWEEP),
        Row(FAIR, TEACHER),
        Row(FAIR_M1, sweep_teacher(2), "{model}, the 1-layer student's chain"),
        *(
            row
            for pair in FAIR_PAIRS
            for row in (Row(pair.arm, pair.student), Row(pair.arm, pair.twin, "{model} (CE only)"))
        ),
    ]
    trained = [row for row in rows if row.target not in layout.SASREC_TARGETS]
    return {
        "fair_gate": partial(gate_table, results, FAIR_PAIRS),
        "fair_valid": partial(accuracy_table, results, rows, "valid"),
        "fair_test": partial(accuracy_table, results, rows, "test"),
        "fair_comparisons": partial(pair_comparisons, results, FAIR_PAIRS),
        "fair_curves": partial(validation_curves, results, trained),
        "fair_walltimes": partial(wall_times, results, [*FAIR.datasets, *FAIR_M1.datasets]),
    }


def main() -> None:
    args = section_parser(__doc__).parse_args()
    results = args.results
    ce_only = ablation_target("ce")
    probe_rows = [  # the probes recompute SASRec: the table their E4SRec_2 reads (see docs/experiments.md)
        Row(LONG_PROBE, "sasrec", "{model}, the probes' own"),
        Row(SEED1, sweep_teacher(2), "{model}, 1 target per user (the paper's)"),
        Row(TARGETS_PROBE, TEACHER, "{model}, up to 10 targets per user"),
        Row(LONG_PROBE, TEACHER, "{model}, up to 10 targets per user, 600 steps"),
    ]
    students_rows = [  # SLMRec 4←24 and the CE-only student of seed 2, trained 200 and 400 steps
        Row(arm, target, f"{{model}}, {steps} steps")
        for arm, steps in ((SEED2, 200), (STUDENTS_PROBE, 400))
        for target in (STUDENT, ce_only)
    ]
    blocks = {
        "precision": partial(precision_table, results, PRECISION),
        **fair_blocks(results),
        **kd_blocks(results),
        **gemma3_blocks(results),
        "table2": lambda: accuracy_table(
            results,
            [
                Row(PRETRAINED, "popularity"),
                Row(PRETRAINED, "sasrec"),
                Row(PRETRAINED, TEACHER),
                Row(PRETRAINED, sweep_teacher(SHALLOW)),
                Row(PRETRAINED, student_of(SHALLOW)),
                Row(PRETRAINED, STUDENT),
                Row(RANDOM, TEACHER, "{model}, random init"),
                Row(RANDOM, STUDENT, "{model}, random init"),
            ],
        ),
        "comparisons": partial(
            row_comparisons,
            results,
            [
                (Row(PRETRAINED, STUDENT), Row(PRETRAINED, ce_only)),
                (Row(PRETRAINED, student_of(SHALLOW)), Row(PRETRAINED, ce_only)),
                (Row(PRETRAINED, TEACHER), Row(PRETRAINED, ce_only)),  # the gaps the students could close
                (Row(PRETRAINED, sweep_teacher(SHALLOW)), Row(PRETRAINED, ce_only)),
                (Row(PRETRAINED, STUDENT), Row(PRETRAINED, TEACHER)),  # how close each student comes
                (Row(PRETRAINED, student_of(SHALLOW)), Row(PRETRAINED, sweep_teacher(SHALLOW))),
                (Row(PRETRAINED, TEACHER), Row(PRETRAINED, "sasrec")),
                (probe_rows[2], probe_rows[1]),  # ten targets against one, seed 1
                (probe_rows[-1], probe_rows[0]),
                (students_rows[2], students_rows[3]),
                (Row(PRETRAINED, TEACHER), Row(RANDOM, TEACHER, "{model}, random init")),
                (Row(PRETRAINED, STUDENT), Row(RANDOM, STUDENT, "{model}, random init")),
                (Row(RANDOM, STUDENT, "{model}, random init"), Row(RANDOM, TEACHER, "{model}, random init")),
            ],
        ),
        **{  # each probe on test, and on validation, where its choices were made
            f"{probe}{suffix}": partial(accuracy_table, results, rows, split)
            for probe, rows in (("targets_probe", probe_rows), ("students_probe", students_rows))
            for suffix, split in (("", "test"), ("_valid", "valid"))
        },
        "curves": lambda: validation_curves(
            results,
            [
                Row(PRETRAINED, TEACHER),
                Row(PRETRAINED, sweep_teacher(SHALLOW)),
                Row(PRETRAINED, STUDENT),
                Row(PRETRAINED, student_of(SHALLOW)),
                Row(PRETRAINED, ce_only),
                Row(RANDOM, TEACHER, "{model}, random init"),
                Row(RANDOM, STUDENT, "{model}, random init"),
            ],
        ),
        "students_probe_curves": lambda: validation_curves(results, students_rows),
        "table4": lambda: ablation_table(results, PRETRAINED),
        "table4_comparisons": partial(  # each variant against CE alone, over the seeds that have both
            row_comparisons,
            results,
            [
                (Row(PRETRAINED, ablation_target(v), variant_label(v)), Row(PRETRAINED, ce_only, variant_label("ce")))
                for v in PAPER_VARIANTS
                if v != "ce"
            ],
        ),
        "table5": lambda: efficiency_table(
            results, BASE, ["sasrec", TEACHER, sweep_teacher(SHALLOW), student_of(SHALLOW), STUDENT]
        ),
        "figure2": lambda: layer_table(
            results,
            BASE,
            [*(sweep_teacher(n) for n in SWEEP), TEACHER],
            Path(layout.direct_inference("table", TEACHER, BASE, results)),
        ),
        "figure2_comparisons": partial(  # each depth trained alone against the deep teacher (seed 1)
            row_comparisons, results, [(Row(SEED1, sweep_teacher(n)), Row(SEED1, TEACHER)) for n in SWEEP]
        ),
        "balance": lambda: loss_balance(results, BASE),
        "alignment": lambda: alignment_table(results / BASE / "alignment.json"),
        "walltimes": lambda: wall_times(
            results,
            [d for arm in (PRETRAINED, RANDOM, TARGETS_PROBE, LONG_PROBE, STUDENTS_PROBE) for d in arm.datasets],
        ),
    }
    for name, caption in FIGURES.items():  # the report rule's plots, copied to docs/figures/
        made, link = Path(layout.table(name, BASE, results)), f"figures/{BASE}_{name}.png"
        blocks[f"{name}_png"] = partial(linked_figure, made, args.doc, link, caption)
    document = replace_generated(args.doc.read_text(), blocks)
    with atomic_path(args.doc) as tmp:
        tmp.write_text(document)
    print(f"wrote {args.doc} from {results}")


if __name__ == "__main__":
    main()
