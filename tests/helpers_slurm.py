"""A real one-node Slurm for tests: munged, slurmctld and slurmd started as root, all state in one directory.

Debian's `slurmctld slurmd slurm-client munge` (Slurm 22.05) are enough; `.ci/run` installs them. The daemons
run in the foreground as this process's children, on free ports, with their own munge key and socket, and
`stop()` ends exactly what `start()` began, by PID.

One file lies outside the state directory: /etc/slurm/slurm.conf, a link to the cluster's config, made only where
no config is there and removed by `stop()`. Inside each job the SLURM executor's job step
(snakemake-executor-plugin-slurm-jobstep 0.6) drops SLURM_CONF from the environment of its `srun`, which then
finds no config outside the default path ("fetch_config: DNS SRV lookup failed").

Accounting is off (`accounting_storage/none`): `sacct` then answers nothing, so job status comes from
`squeue`, which keeps finished jobs for `MinJobAge` seconds. The partitions are named after the profile's
placeholders' roles (`cpu`, `gpu`); the node has no GPU, so a GPU request is refused by `sbatch`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "srun")
# More CPUs than this 2-core machine has (config_overrides lets slurmd accept that), so a 2-CPU training job and
# 1-CPU jobs of the demo run side by side as they would on a real node.
CPUS = 4
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")  # where srun looks when SLURM_CONF is not set
MIN_JOB_AGE_S = 600  # finished jobs stay visible to `squeue` and `scontrol show job` for 10 minutes
START_TIMEOUT_S = 60.0


def missing_reason() -> str | None:
    """Why a real Slurm cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "a one-node Slurm needs root (slurmd runs jobs as their owner)"
    missing = [name for name in (*DAEMONS, *COMMANDS) if not shutil.which(name, path=f"{os.environ['PATH']}:/usr/sbin")]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install slurmctld slurmd slurm-client munge)"
    if DEFAULT_CONF.exists():
        return f"{DEFAULT_CONF} exists: this machine belongs to a Slurm cluster, which a test must not touch"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_memory_mb() -> int:
    """The node's RealMemory: this machine's, less 1 GB for the daemons and the test itself."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024


def slurm_conf(state: Path, host: str, munge_socket: Path) -> str:
    ctld_port, slurmd_port = free_port(), free_port()
    return f"""\
ClusterName=slmrec-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
MinJobAge={MIN_JOB_AGE_S}
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=1
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={node_memory_mb()} State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """A running one-node cluster; `env` is what a client (sbatch, snakemake) needs to reach it."""

    state: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.state / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        return {**env, "SLURM_CONF": str(self.conf)}

    def command(self, *argv: str, check: bool = True) -> str:
        """A Slurm client command against this cluster; its stdout."""
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> SlurmCluster:
        """Link /etc/slurm/slurm.conf, start munged, slurmctld and slurmd; return once the node accepts jobs, or
        undo it all and raise."""
        host = socket.gethostname().split(".")[0]
        for sub in ("ctld", "slurmd", "munge"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        munge = self.state / "munge"
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        munge_socket = munge / "munge.socket"
        self.conf.write_text(slurm_conf(self.state, host, munge_socket))
        daemons = {
            "munged": ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
                       f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                       f"--seed-file={munge}/munged.seed"],
            "slurmctld": ["slurmctld", "-D", "-i", "-f", str(self.conf)],
            "slurmd": ["slurmd", "-D", "-f", str(self.conf), "-N", host],
        }  # fmt: skip
        try:
            DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
            DEFAULT_CONF.unlink(missing_ok=True)  # only ever a dangling link left by a killed run (missing_reason)
            DEFAULT_CONF.symlink_to(self.conf)
            for name, argv in daemons.items():
                log = open(self.state / f"{name}.out", "w")  # noqa: SIM115 - the daemon holds it until stop()
                path = shutil.which(argv[0], path=f"{os.environ['PATH']}:/usr/sbin")
                self.processes.append(subprocess.Popen([path, *argv[1:]], env=self.env, stdout=log, stderr=log))
                if name == "munged":
                    self.wait_for(munge_socket.exists, "munged's socket")
            self.wait_for(self.node_idle, f"node {host} to be idle")
        except BaseException:
            self.stop()
            raise
        return self

    def node_idle(self) -> bool:
        return "State=IDLE" in self.command("scontrol", "show", "node", check=False)

    def wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(self.state.rglob("*.log")))
                why = f"exited: {', '.join(dead)}" if dead else "timed out"
                raise RuntimeError(f"waiting for {what}: {why}\n{logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel every job, then end the daemons this object started (SIGTERM, SIGKILL after 10 s), newest first."""
        if self.processes and all(p.poll() is None for p in self.processes):
            self.command("scancel", "--full", "--user", "root", check=False)
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.processes.clear()
        if DEFAULT_CONF.is_symlink() and DEFAULT_CONF.readlink() == self.conf:
            DEFAULT_CONF.unlink()

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still remembers (MinJobAge), as `scontrol show job` key=value records, oldest first."""
        out = self.command("scontrol", "show", "job", "--oneliner")
        records = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in out.splitlines()]
        return sorted((r for r in records if "JobId" in r), key=lambda r: int(r["JobId"]))  # not "No jobs in …"


def rule_of(job: dict[str, str]) -> str:
    """The Snakemake rule of a job, from the comment the SLURM executor gives it (`rule_<name>[_wildcards_...]`)."""
    return job.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]


def job_table(jobs: list[dict[str, str]]) -> str:
    """The jobs as a fixed-width table: what was asked for (CPUs, memory, time) and how each job ended."""
    columns = ("JobId", "Partition", "JobState", "ExitCode", "NumCPUs", "MinMemoryNode", "TimeLimit", "RunTime")
    rows = [("Rule", *columns), *((rule_of(job), *(job.get(c, "") for c in columns)) for job in jobs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
