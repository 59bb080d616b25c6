"""SLMRec's block map: where teacher and student are compared. Plain Python, so the workflow can check a
configuration against it while it builds the DAG without importing torch."""

from __future__ import annotations

from slmrec.errors import DistillConfigError


def block_boundaries(teacher_layers: int, student_layers: int, blocks: int) -> list[tuple[int, int]]:
    """(teacher layer, student layer) pairs at the end of each of the n blocks: (l/n·i, m/n·i), i = 1..n."""
    if blocks < 1:
        raise DistillConfigError(f"distill.blocks must be at least 1, got {blocks}")
    for name, layers in (("teacher", teacher_layers), ("student", student_layers)):
        if layers % blocks:
            raise DistillConfigError(
                f"{name} has {layers} layers, which distill.blocks = {blocks} does not divide; "
                f"choose blocks among the common divisors of {teacher_layers} and {student_layers}"
            )
    if student_layers > teacher_layers:
        raise DistillConfigError(
            f"the student ({student_layers} layers) must not be deeper than its teacher ({teacher_layers} layers)"
        )
    return [(teacher_layers // blocks * i, student_layers // blocks * i) for i in range(1, blocks + 1)]
