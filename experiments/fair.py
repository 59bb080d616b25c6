"""The fair test of distillation (experiments/ml100k_fair.yaml): its gate, the targets it sends on, and its
section of docs/experiments.md.

    .venv/bin/python experiments/fair.py --gate       # the gate table, from seed 1's teachers (validation)
    .venv/bin/python experiments/fair.py --targets    # the Snakemake targets of the pairs that passed, all seeds
    .venv/bin/python experiments/fair.py              # fill the fair test's blocks of docs/experiments.md

Every figure comes from the models' own `ranks.parquet` and `metrics.json`; the gate reads validation only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from summarize import FAIR_PAIRS, fair_blocks

from slmrec.io import atomic_path
from slmrec.summary import fill_block, gate_passed, gate_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--doc", type=Path, default=Path("docs/experiments.md"))
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--gate", action="store_true", help="print the gate table")
    what.add_argument("--targets", action="store_true", help="print the passing pairs' metrics.json targets")
    args = parser.parse_args()
    if args.gate:
        print(gate_table(args.results, FAIR_PAIRS), end="")
        return
    if args.targets:
        passed = [pair for pair in FAIR_PAIRS if gate_passed(args.results, pair)]
        print(" ".join(f"results/{d}/{t}/metrics.json" for p in passed for d in p.arm.datasets for t in p.targets()))
        return
    document = args.doc.read_text()
    for name, make in fair_blocks(args.results).items():
        document = fill_block(document, name, make())
    with atomic_path(args.doc) as tmp:
        tmp.write_text(document)


if __name__ == "__main__":
    main()
