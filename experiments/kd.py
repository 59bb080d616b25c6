"""Beyond the paper (experiments/ml100k_kd.yaml): the teacher's scores distilled into the small LLM and into
SASRec; fills the section "Beyond the paper" of docs/experiments.md.

    .venv/bin/python experiments/kd.py [--results results] [--doc docs/experiments.md]

Every figure comes from the models' own `ranks.parquet` and `metrics.json`: means ± sd over the seeds, and each
comparison per user, pooled over the seeds that have both models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slmrec.summary import Arm, Row, arm_section, fill_document, section_parser
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


def pairs() -> list[tuple[Row, Row]]:
    """Each KD row against its twin; the SASRec student against plain SASRec; what the teacher's initialisation
    adds to each score term; the teacher against both twins (the gap there is to pass on), and the SASRec students
    against the teacher."""
    table = rows()
    row = {v: table[ablation_target(v)] for v in KD_VARIANTS if v != SASREC} | {"ce": table[ablation_target("ce")]}
    chosen = [(row[v], table[ablation_target(KD_TWINS[v])]) for v in KD_TWINS]
    chosen += [(table[SASREC_STUDENT], table[SASREC])]
    chosen += [(row["init_logits"], row["ce_logits"]), (row["init_rank"], row["ce_rank"])]
    chosen += [(table[TEACHER], row["ce"]), (table[TEACHER], table[SASREC])]
    chosen += [(row[v], table[TEACHER]) for v in ("sasrec_logits", "sasrec_rank")]
    return chosen


def kd_blocks(results: Path) -> dict[str, Callable[[], str]]:
    """The section's blocks of docs/experiments.md (experiments/summarize.py fills them with the others); the
    curves are the LLM students' and the teacher's."""
    models = list(rows().values())
    curves = [row for row in models if row.target != SASREC and "SASRec" not in row.label]
    return arm_section("kd", results, KD, models, pairs(), curves)


def main() -> None:
    args = section_parser(__doc__).parse_args()
    fill_document(args.doc, kd_blocks(args.results))


if __name__ == "__main__":
    main()
