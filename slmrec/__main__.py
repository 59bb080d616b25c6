"""Command line: `python -m slmrec provenance results/<dataset>/metrics.json`."""

from __future__ import annotations

import argparse
import sys

from slmrec.provenance import render, stale, trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slmrec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prov = commands.add_parser("provenance", help="print the chain of manifests behind a result")
    prov.add_argument("target", help="a result file, e.g. results/demo/metrics.json")
    prov.add_argument("--root", default="results", help="where to look for manifests (default: results)")
    args = parser.parse_args(argv)

    link = trace(args.target, args.root)
    if link.record is None:
        print(f"no manifest under {args.root} records {args.target}", file=sys.stderr)
        return 2
    print("\n".join(render(link)))
    if stale(link):
        print("\nSTALE: some inputs changed after the result was made; rerun snakemake to refresh it.")
        return 1
    print("\nup to date: every recorded checksum matches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
