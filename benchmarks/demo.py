"""Time the demo DAG from nothing, as `make demo` runs it, against its budget: under 10 minutes on 2 CPU cores.

    .venv/bin/python benchmarks/demo.py                  # the whole demo, about 5.5 minutes on 2 idle cores
    .venv/bin/python benchmarks/demo.py --cores 4 --budget-min 5

Snakemake runs the demo in a fresh temporary copy of the workflow, so nothing in the checkout's results/ is
reused or touched. The budget is a wall-clock figure, so other work on the machine inflates it: the script
prints the load average before it starts, and, as the reference measured in the same run, the CPU time the
jobs used against the wall time they took. On an idle machine their ratio approaches the core count; far
below it, the jobs waited on each other or on other work. Exit status 0 only if the demo finished within the
budget.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slmrec.summary import benchmark_times
from slmrec.workflow import copy_workflow

ROOT = Path(__file__).resolve().parent.parent
BUDGET_MIN = 10.0  # the demo's promise in the README


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2, help="Snakemake's --cores, as `make demo CORES=...`")
    parser.add_argument("--budget-min", type=float, default=BUDGET_MIN, help="the wall-clock budget in minutes")
    parser.add_argument("--configfile", type=Path, help="a config overlay (default: none, the demo as shipped)")
    parser.add_argument("targets", nargs="*", help="Snakemake targets (default: the demo's, as `make demo`)")
    args = parser.parse_args()
    if args.configfile and not args.configfile.is_file():
        parser.error(f"--configfile {args.configfile}: no such file")

    with tempfile.TemporaryDirectory(prefix="slmrec-bench-demo-") as tmp:
        workdir = copy_workflow(ROOT, Path(tmp))
        overlay = ["--configfile", str(args.configfile.resolve())] if args.configfile else []
        command = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(args.cores), *args.targets, *overlay]
        load = os.getloadavg()[0]
        print(f"load average before the run: {load:.2f} on {os.cpu_count()} CPUs (--cores {args.cores})")
        start = time.perf_counter()
        with open(workdir / "snakemake.log", "w") as log:
            done = subprocess.run(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            tail = (workdir / "snakemake.log").read_text()[-4000:]
            print(f"snakemake failed (exit {done.returncode}) after {wall:.0f} s:\n{tail}", file=sys.stderr)
            return 2
        jobs = benchmark_times(workdir / "results")

    cpu = jobs["cpu_s"].sum()
    print(f"{len(jobs)} jobs; the five longest (wall s, CPU s):")
    for job, job_wall, job_cpu in jobs.head(5).iter_rows():
        print(f"  {job.replace('/logs/', ': '):<32} {job_wall:8.1f} {job_cpu:8.1f}")
    print(f"jobs' CPU time over the run's wall time: {cpu / wall:.2f} (at most --cores {args.cores})")
    verdict = "PASS" if wall <= args.budget_min * 60 else "FAIL"
    print(
        f"demo wall time: {wall / 60:.2f} min, {wall / (args.budget_min * 60):.2f} of the {args.budget_min:g}-minute "
        f"budget: {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
