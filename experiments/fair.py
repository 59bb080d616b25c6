"""The fair test of distillation (experiments/ml100k_fair.yaml): its gate, the targets it sends on, and its
section of docs/experiments.md.

    .venv/bin/python experiments/fair.py --gate       # the gate table, from seed 1's teachers (validation)
    .venv/bin/python experiments/fair.py --targets    # the Snakemake targets of the pairs that passed, all seeds
    .venv/bin/python experiments/fair.py              # fill the fair test's blocks of docs/experiments.md

Every figure comes from the models' own `ranks.parquet` and `metrics.json`; the gate reads validation only.
"""

from __future__ import annotations

from summarize import FAIR_PAIRS, fair_blocks

from slmrec.summary import fill_document, gate_passed, gate_table, section_parser


def main() -> None:
    parser = section_parser(__doc__)
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
    fill_document(args.doc, fair_blocks(args.results))


if __name__ == "__main__":
    main()
