"""Beyond the paper (experiments/ml100k_kd.yaml): the teacher's scores distilled into the small LLM and into
SASRec; fills the section "Beyond the paper" of docs/experiments.md.

    .venv/bin/python experiments/kd.py [--results results] [--doc docs/experiments.md]

Every figure comes from the models' own `ranks.parquet` and `metrics.json`: means ± sd over the seeds, and each
comparison per user, pooled over the seeds that have both models.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

from slmrec.io import atomic_path
from slmrec.summary import Arm, Row, accuracy_table, arm_comparisons, fill_block, validation_curves, wall_times
from slmrec.targets import KD_TWINS, KD_VARIANTS, SASREC, SASREC_STUDENT, TEACHER, ablation_target, variant_label

KD = Arm("score distillation", ("ml100k_kd", "ml100k_kd_s2", "ml100k_kd_s3"))


def label(variant: str) -> str:
    """`LLM student: CE + logits KD`, `SASRec: CE + rank KD`."""
    text = variant_label(variant)
    return text if KD_VARIANTS[variant].sasrec else f"LLM student: {text}"


def rows() -> dict[str, Row]:
    """The section's models by target: the teacher, the twins (the LLM student on CE alone, plain SASRec), each KD
    row of the ablation, and the SASRec student with both terms."""
    twin = ablation_target("ce")
    kd = {ablation_target(v): Row(KD, ablation_target(v), label(v)) for v in KD_VARIANTS if v != SASREC}
    return {
        TEACHER: Row(KD, TEACHER, "{model} (the teacher)"),
        SASREC: Row(KD, SASREC, "SASRec: CE (plain SASRec)"),
        twin: Row(KD, twin, "LLM student: CE (the twin)"),
        **kd,
        SASREC_STUDENT: Row(KD, SASREC_STUDENT, "SASRec: CE + logits KD + rank KD"),
    }


def comparisons(results: Path) -> str:
    """Each KD row against its twin; the SASRec student against plain SASRec; what the teacher's initialisation
    adds to each score term; the teacher against both twins (the gap there is to pass on), and the SASRec students
    against the teacher."""
    table = rows()
    row = {v: table[ablation_target(v)] for v in KD_VARIANTS if v != SASREC} | {"ce": table[ablation_target("ce")]}
    pairs = [(row[v], table[ablation_target(KD_TWINS[v])]) for v in KD_TWINS]
    pairs += [(table[SASREC_STUDENT], table[SASREC])]
    pairs += [(row["init_logits"], row["ce_logits"]), (row["init_rank"], row["ce_rank"])]
    pairs += [(table[TEACHER], row["ce"]), (table[TEACHER], table[SASREC])]
    pairs += [(row[v], table[TEACHER]) for v in ("sasrec_logits", "sasrec_rank")]
    return arm_comparisons(results, KD, pairs)


def kd_blocks(results: Path) -> dict[str, Callable[[], str]]:
    """The section's blocks of docs/experiments.md (experiments/summarize.py fills them with the others)."""
    models = list(rows().values())
    trained = [row for row in models if row.target != SASREC]
    return {
        "kd_valid": partial(accuracy_table, results, models, "valid"),
        "kd_test": partial(accuracy_table, results, models, "test"),
        "kd_comparisons": partial(comparisons, results),
        "kd_curves": partial(validation_curves, results, [r for r in trained if "SASRec" not in r.label]),
        "kd_walltimes": partial(wall_times, results, KD.datasets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--doc", type=Path, default=Path("docs/experiments.md"))
    args = parser.parse_args()
    document = args.doc.read_text()
    for name, make in kd_blocks(args.results).items():
        document = fill_block(document, name, make())
    with atomic_path(args.doc) as tmp:
        tmp.write_text(document)


if __name__ == "__main__":
    main()
