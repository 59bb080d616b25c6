"""A second backbone family (experiments/ml100k_gemma3.yaml): the fair test's 1 <- 2 pair and the score-distilled
student on Gemma 3 270M; fills the section "A second family: Gemma 3" of docs/experiments.md.

    .venv/bin/python experiments/gemma3.py [--results results] [--doc docs/experiments.md]

The tables are the models' own: `metrics.json` as means ± sd over the three seeds, `ranks.parquet` for the paired
comparisons (users of every seed with both models, pooled).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slmrec.summary import Arm, Row, arm_section, fill_document, section_parser
from slmrec.targets import SASREC, STUDENT, TEACHER, ablation_target, sweep_teacher

GEMMA3 = Arm("Gemma 3", ("ml100k_gemma3", "ml100k_gemma3_s2", "ml100k_gemma3_s3"))
ROWS = {
    SASREC: Row(GEMMA3, SASREC),
    TEACHER: Row(GEMMA3, TEACHER, "{model} (the teacher)"),
    "shallow": Row(GEMMA3, sweep_teacher(1), "{model} (the student's depth, trained alone)"),
    STUDENT: Row(GEMMA3, STUDENT, "{model} (hidden states)"),
    "twin": Row(GEMMA3, ablation_target("ce"), "1-layer student: CE (the twin)"),
    "init_logits": Row(GEMMA3, ablation_target("init_logits"), "1-layer student: teacher init + CE + logits KD"),
}
# The gate (is the teacher better than its student's depth?), the gap the teacher has to pass on, each way of
# passing it on against the twin, the best student against its teacher, and the LLM against SASRec.
PAIRS = [
    (TEACHER, "shallow"),
    (TEACHER, "twin"),
    (STUDENT, "twin"),
    ("init_logits", "twin"),
    ("init_logits", TEACHER),
    (TEACHER, SASREC),
]


def gemma3_blocks(results: Path) -> dict[str, Callable[[], str]]:
    """The section's blocks of docs/experiments.md (experiments/summarize.py fills them with the others)."""
    models = list(ROWS.values())
    curves = [row for row in models if row.target != SASREC]
    return arm_section("gemma3", results, GEMMA3, models, [(ROWS[a], ROWS[b]) for a, b in PAIRS], curves)


def main() -> None:
    args = section_parser(__doc__).parse_args()
    fill_document(args.doc, gemma3_blocks(args.results))


if __name__ == "__main__":
    main()
