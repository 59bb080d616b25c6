"""Command line: `python -m slmrec provenance results/<dataset>/metrics.json`, `python -m slmrec compare demo
demo_l2` (`--paired student ablation/ce`: two models user by user), `python -m slmrec fetch-ml100k`, `python -m
slmrec recommend EXPORT --history ID,ID,...` (top-k items from an exported model)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from snakemake.exceptions import WorkflowError

from slmrec import markdown
from slmrec.compare import compare, paired
from slmrec.config import load_config
from slmrec.data.fetch import ML100K_DEST, RECBOLE_REQUIREMENT, fetch_ml100k
from slmrec.errors import ConfigError, FetchError
from slmrec.precision import PRECISIONS
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


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, or argparse's own usage error naming the argument."""
    value = int(text) if text.lstrip("-").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


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
    rec = commands.add_parser(
        "recommend",
        help="the top-k items after histories of raw item ids, from an export (results/<dataset>/export/<target>/"
        "<variant>)",
    )
    rec.add_argument("export", help="an export directory, e.g. results/demo/export/student/float32")
    given = rec.add_mutually_exclusive_group(required=True)
    given.add_argument("--history", help="raw item ids, oldest first, comma-separated (e.g. 50,181,1)")
    given.add_argument(
        "--histories",
        help='a file of histories: JSON lines (a list of ids, or {"user": ..., "history": [...]}) or Parquet '
        "(a list column `history`, optionally `user`)",
    )
    rec.add_argument("-k", type=positive_int, default=10, help="items per history (default: 10)")
    rec.add_argument("--json", action="store_true", help="print JSON lines, one object per history")
    rec.add_argument(
        "--skip-unknown", action="store_true", help="drop item ids the model does not know (named on stderr)"
    )
    rec.add_argument("--include-history", action="store_true", help="allow items of the history itself")
    rec.add_argument("--precision", choices=PRECISIONS, help="how to compute (default: as the model was trained)")
    args = parser.parse_args(argv)

    if args.command == "recommend":
        return recommend(args)

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


def recommend(args: argparse.Namespace) -> int:
    """`slmrec recommend`: each history's top k, as a table or JSON lines; notes and errors on stderr."""
    # torch and transformers, imported for this command alone
    from slmrec.export import load_export
    from slmrec.recommend import History, internal_history, read_histories

    try:
        if args.history is not None:
            histories = [History(1, [i.strip() for i in args.history.split(",") if i.strip()])]
        else:
            histories = read_histories(args.histories)
        export = load_export(args.export, precision=args.precision)
        resolved = [internal_history(history, export.items, args.skip_unknown) for history in histories]
    except (OSError, ValueError) as err:  # a file not there, an unreadable export, a HistoryError
        print(err, file=sys.stderr)
        return 2
    for history, (_, notes) in zip(histories, resolved, strict=True):
        for note in notes:
            print(f"note: {history.label}: {note}", file=sys.stderr)
    top = export.recommend([ids for ids, _ in resolved], args.k, exclude_history=not args.include_history)
    for history, items, scores in zip(histories, top.items.tolist(), top.scores.tolist(), strict=True):
        found = [
            (export.items.raw[item], score) for item, score in zip(items, scores, strict=True) if math.isfinite(score)
        ]
        if args.json:
            who = {"user": history.user} if history.user is not None else {}
            ranked = {"items": [item for item, _ in found], "scores": [round(score, 6) for _, score in found]}
            print(json.dumps({"history": history.number, **who, **ranked}))
        else:
            print(f"{history.label}: top {len(found)} of {len(export.items)} items")
            rows = [[str(rank), item, f"{score:.4f}"] for rank, (item, score) in enumerate(found, 1)]
            print(markdown.table(["rank", "item", "score"], rows, text_columns=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
