"""Command line: `python -m slmrec provenance results/<dataset>/metrics.json`, `python -m slmrec fetch-ml100k`."""

from __future__ import annotations

import argparse
import sys

from slmrec.data.fetch import ML100K_DEST, RECBOLE_REQUIREMENT, FetchError, fetch_ml100k
from slmrec.provenance import render, stale, trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slmrec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prov = commands.add_parser("provenance", help="print the chain of manifests behind a result")
    prov.add_argument("target", help="a result file, e.g. results/demo/metrics.json")
    prov.add_argument("--root", default="results", help="where to look for manifests (default: results)")
    fetch = commands.add_parser(
        "fetch-ml100k",
        help=f"write MovieLens 100K (RecBole .inter) from the {RECBOLE_REQUIREMENT} wheel, fetched with pip",
    )
    fetch.add_argument("dest", nargs="?", default=ML100K_DEST, help=f"where to write it (default: {ML100K_DEST})")
    args = parser.parse_args(argv)

    if args.command == "fetch-ml100k":
        try:
            print(f"wrote {fetch_ml100k(args.dest)}")
        except FetchError as err:
            print(err, file=sys.stderr)
            return 2
        return 0

    link = trace(args.target, args.root)
    if link.record is None:
        print(f"no manifest under {args.root} records {args.target}", file=sys.stderr)
        return 2
    print("\n".join(render(link)))
    if stale(link):
        print(
            "\nSTALE: some recorded inputs or outputs changed after the result was made; "
            "rerun snakemake to refresh it (a changed output needs the --force shown beside it)."
        )
        return 1
    print("\nup to date: every recorded checksum matches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
