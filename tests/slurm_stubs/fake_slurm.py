"""A fake SLURM for tests: `sbatch` runs the job on this machine, `sacct`/`squeue` report its state.

Each stub executable next to this file (sbatch, squeue, sacct, scontrol, sinfo, sacctmgr, srun,
scancel) calls `fake_slurm.py <command> <args...>`. Every call appends one JSON line
{"cmd": ..., "argv": [...], ...} to the file named by $SLMREC_SLURM_LOG. Job state lives in
"$SLMREC_SLURM_LOG.jobs/": <id>.json (name, comment, pid) and <id>.rc (exit code, once finished).
Only the standard library is used, so any Python 3.8+ can run it ($SLMREC_SLURM_PYTHON picks one).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ACCOUNT = os.environ.get("SLMREC_SLURM_ACCOUNTS", "CHANGE_ME_account")
PARTITIONS = os.environ.get("SLMREC_SLURM_PARTITIONS", "CHANGE_ME_cpu_partition,CHANGE_ME_gpu_partition")

# Options that take a separate value ("-p part", "--mem 8000"); "--key=value" needs no table.
SBATCH_VALUE_OPTIONS = {
    "-A", "--account", "-p", "--partition", "-t", "--time", "-J", "--job-name", "-o", "--output",
    "-e", "--error", "-D", "--chdir", "--workdir", "-C", "--constraint", "-c", "--cpus-per-task",
    "-n", "--ntasks", "-N", "--nodes", "-G", "--gpus", "--gres", "--mem", "--mem-per-cpu",
    "--comment", "--qos", "--clusters", "-M", "-a", "--array", "--wrap", "--exclude", "-x",
    "--reservation", "--cpus-per-gpu", "--ntasks-per-gpu", "--ntasks-per-node",
}  # fmt: skip
SRUN_VALUE_OPTIONS = SBATCH_VALUE_OPTIONS | {"--jobid", "--cpu-bind", "--mem-per-gpu"}
SACCT_VALUE_OPTIONS = {"--name", "--format", "-o", "--starttime", "-S", "--endtime", "-E", "-j", "--jobs", "-u",
                       "--user", "--clusters", "-M"}  # fmt: skip


def log_path() -> Path:
    path = os.environ.get("SLMREC_SLURM_LOG")
    if not path:
        sys.exit("fake slurm: set SLMREC_SLURM_LOG to the file that records the calls")
    return Path(path)


def state_dir() -> Path:
    directory = Path(f"{log_path()}.jobs")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_atomic(path: Path, text: str) -> None:
    """Write a state file so that a concurrent sacct never reads half of it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def record(cmd: str, argv: list[str], **extra) -> None:
    line = json.dumps({"cmd": cmd, "argv": argv, "time": time.time(), **extra})
    with open(log_path(), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line + "\n")


def parse_options(argv: list[str], value_options: set[str]) -> tuple[dict[str, str], list[str]]:
    """Split argv into {option: value} (flags get "") and the positional arguments after the options."""
    options: dict[str, str] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            options[key] = value
        elif arg in value_options and index + 1 < len(argv):
            options[arg] = argv[index + 1]
            index += 1
        elif not arg.startswith("--") and len(arg) > 2 and arg[:2] in value_options:
            options[arg[:2]] = arg[2:]  # "-n1"
        else:
            options[arg] = ""
        index += 1
    return options, argv[index:]


def option(options: dict[str, str], *names: str, default: str | None = None) -> str | None:
    for name in names:
        if name in options:
            return options[name]
    return default


def next_job_id() -> int:
    counter = state_dir() / "counter"
    with open(state_dir() / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job_id = int(counter.read_text()) + 1 if counter.exists() else 1001
        counter.write_text(str(job_id))
    return job_id


def sbatch(argv: list[str]) -> int:
    options, positional = parse_options(argv, SBATCH_VALUE_OPTIONS)
    job_id = next_job_id()
    record("sbatch", argv, job_id=job_id)
    if option(options, "-a", "--array"):
        print("fake sbatch: array jobs are not supported", file=sys.stderr)
        return 1
    script = option(options, "--wrap")
    if script is None:
        if not positional:
            print("fake sbatch: neither --wrap nor a script given", file=sys.stderr)
            return 1
        script = sys.stdin.read() if positional[0] in ("/dev/stdin", "-") else Path(positional[0]).read_text()
    workdir = option(options, "-D", "--chdir", "--workdir", default=os.getcwd())
    output = option(options, "-o", "--output", default=f"slurm-{job_id}.out").replace("%j", str(job_id))
    output_path = Path(workdir, output)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    cpus = option(options, "-c", "--cpus-per-task", default="1")
    gpus = option(options, "-G", "--gpus", default="")
    env = {
        **os.environ,
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOBID": str(job_id),
        "SLURM_JOB_NAME": option(options, "-J", "--job-name", default="sbatch"),
        "SLURM_CPUS_PER_TASK": cpus,
        "SLURM_CPUS_ON_NODE": cpus,
        "SLURM_NTASKS": "1",
        "SLURM_NNODES": "1",
        "SLURM_NODELIST": "localhost",
        "SLURM_SUBMIT_DIR": os.getcwd(),
        "SLURM_CLUSTER_NAME": "fake",
    }
    if gpus:
        env["SLURM_GPUS"] = gpus.rsplit(":", 1)[-1]
    state = state_dir() / f"{job_id}.json"
    info = {"name": env["SLURM_JOB_NAME"], "comment": option(options, "--comment", default="")}
    write_atomic(state, json.dumps(info))
    if fail_once(info["comment"]):
        script = f"echo 'fake sbatch: job {job_id} fails on purpose (SLMREC_SLURM_FAIL_ONCE)'; exit 1"
    # Run the job detached: a runner process waits for the script and stores its exit code.
    with open(output_path, "ab") as out:
        runner = subprocess.Popen(
            [sys.executable, __file__, "_run", str(job_id), script],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    write_atomic(state, json.dumps({**info, "pid": runner.pid}))
    print(job_id)
    return 0


def fail_once(comment: str) -> bool:
    """True for the first submission of each rule named in $SLMREC_SLURM_FAIL_ONCE (comma-separated)."""
    for rule in filter(None, os.environ.get("SLMREC_SLURM_FAIL_ONCE", "").split(",")):
        if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"):
            marker = state_dir() / f"failed_once_{rule}"
            if not marker.exists():
                marker.touch()
                return True
    return False


def run_job(job_id: str, script: str) -> int:
    """The body of a submitted job (runs detached, in its own session)."""
    rc = subprocess.call(["/bin/bash", "-c", script])
    write_atomic(state_dir() / f"{job_id}.rc", str(rc))
    return rc


def job_states(name: str | None = None, ids: set[str] | None = None) -> list[tuple[str, str]]:
    rows = []
    for state in sorted(state_dir().glob("*.json"), key=lambda p: int(p.stem)):
        info = json.loads(state.read_text())
        if (name is not None and info.get("name") != name) or (ids and state.stem not in ids):
            continue
        rc_file = state.with_suffix(".rc")
        cancelled = state.with_suffix(".cancelled").exists()
        if rc_file.exists():
            status = "CANCELLED" if cancelled else ("COMPLETED" if rc_file.read_text().strip() == "0" else "FAILED")
        else:
            status = "CANCELLED" if cancelled else "RUNNING"
        rows.append((state.stem, status))
    return rows


def sacct(argv: list[str]) -> int:
    record("sacct", argv)
    options, _ = parse_options(argv, SACCT_VALUE_OPTIONS)
    fields = option(options, "--format", "-o", default="JobIdRaw,State")
    if "JobIdRaw" not in fields and "JobID" not in fields:
        return 0  # Reason, NodeList, Account queries: nothing to say
    report_states(option(options, "--name"), option(options, "-j", "--jobs"))
    return 0


def report_states(name: str | None, ids: str | None) -> None:
    """Print "<id>|<state>" lines.

    With $SLMREC_SLURM_STATUS_WAIT=<seconds>, first wait (up to that long) until one of the running jobs
    ends: the executor polls at growing intervals (+10 s each time nothing finished), so answering at
    the moment a job ends keeps a test DAG from idling between its stages.
    """
    wanted = set(ids.split(",")) if ids else None
    deadline = time.monotonic() + float(os.environ.get("SLMREC_SLURM_STATUS_WAIT", "0") or 0)
    states = job_states(name, wanted)
    running = {job_id for job_id, status in states if status == "RUNNING"}
    while running and time.monotonic() < deadline:
        time.sleep(0.2)
        states = job_states(name, wanted)
        if any(status != "RUNNING" for job_id, status in states if job_id in running):
            break
    for job_id, status in states:
        print(f"{job_id}|{status}")


def squeue(argv: list[str]) -> int:
    record("squeue", argv)
    options, _ = parse_options(argv, SACCT_VALUE_OPTIONS | {"--states", "-t"})
    report_states(option(options, "--name"), option(options, "-j", "--jobs"))
    return 0


def scancel(argv: list[str]) -> int:
    record("scancel", argv)
    for job_id in (a for a in argv if not a.startswith("-")):
        job_id = job_id.split("_")[0]
        state = state_dir() / f"{job_id}.json"
        if not state.exists():
            continue
        state.with_suffix(".cancelled").touch()
        pid = json.loads(state.read_text()).get("pid")
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    return 0


def scontrol(argv: list[str]) -> int:
    record("scontrol", argv)
    if argv[:2] == ["show", "config"]:
        print("Configuration data as of 2025-01-01T00:00:00")
        print("MaxArraySize            = 1001")
        print("MinJobAge               = 60 sec")
    elif argv[:2] == ["show", "partition"]:
        for index, name in enumerate(PARTITIONS.split(",")):
            print(f"PartitionName={name}")
            print(f"   Default={'YES' if index == 0 else 'NO'} MaxTime=7-00:00:00 MaxNodes=UNLIMITED")
            print(f"   TotalCPUs=16 TotalNodes=1 {'TRES=cpu=16,gres/gpu=1' if 'gpu' in name else 'TRES=cpu=16'}")
            print()
    return 0


def sinfo(argv: list[str]) -> int:
    record("sinfo", argv)
    print("PARTITION")
    for index, name in enumerate(PARTITIONS.split(",")):
        print(f"{name}*" if index == 0 else name)
    return 0


def sacctmgr(argv: list[str]) -> int:
    record("sacctmgr", argv)
    for account in ACCOUNT.split(","):
        print(account)
    return 0


def srun(argv: list[str]) -> int:
    """Run the step's command here: drop srun's own options and exec the rest."""
    options, command = parse_options(argv, SRUN_VALUE_OPTIONS)
    record("srun", argv, job_id=os.environ.get("SLURM_JOB_ID"))
    if not command:
        print("fake srun: no command given", file=sys.stderr)
        return 1
    os.execvp(command[0], command)
    return 1  # not reached


COMMANDS = {
    "sbatch": sbatch,
    "sacct": sacct,
    "squeue": squeue,
    "scancel": scancel,
    "scontrol": scontrol,
    "sinfo": sinfo,
    "sacctmgr": sacctmgr,
    "srun": srun,
}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_run":
        return run_job(argv[1], argv[2])
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: fake_slurm.py {{{','.join(COMMANDS)}}} ARGS...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
