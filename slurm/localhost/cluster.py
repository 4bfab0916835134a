#!/usr/bin/env python3
"""A one-node SLURM cluster on localhost, kept entirely under one directory.

Try the SLURM path of the harness on a laptop or CI machine (Debian 12 / Ubuntu with slurm-wlm
22.05, run as root, no systemd needed):

    python3 slurm/localhost/cluster.py install          # apt-get the daemons (once per machine)
    python3 slurm/localhost/cluster.py start DIR        # MariaDB, slurmdbd, slurmctld, slurmd
    eval "$(python3 slurm/localhost/cluster.py env DIR)" # export SLURM_CONF=DIR/slurm.conf
    python3 slurm/localhost/cluster.py status DIR       # nodes, partitions, accounting
    python3 slurm/localhost/cluster.py stop DIR         # cancel jobs, stop every daemon

DIR holds the configuration, controller state, spool, logs, pid files and the MariaDB data
directory; nothing is written to /etc. Accounting runs through slurmdbd so that `sacct` (which
submitit polls for job states) works. The partition `debug` and the array limit match
`slurm/profiles/localhost.yaml`. Only the standard library is used.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
BINARIES = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "srun", "squeue", "scancel", "sacct",
            "sacctmgr", "scontrol", "sinfo", "mariadbd", "mariadb-install-db", "mariadb-admin",
            "mariadb")
CLUSTER_NAME = "localhost"
PARTITION = "debug"
PARTITION_MAX_TIME_MIN = 60
DEFAULT_PORT_BASE = 6817          # slurmctld, slurmd, slurmdbd, MariaDB use base .. base+3
DEFAULT_MAX_ARRAY_SIZE = 10       # the profile's max_array_size must equal this
DIR_TAG = "SOFTDIMO_SLURM_DIR"    # environment tag that marks the daemons of one cluster
STOP_ORDER = ("slurmd", "slurmctld", "slurmdbd", "mariadbd")


# A failure the user can act on; printed without a traceback.
class ClusterError(RuntimeError):
    pass


#----------------------------------------------------------------------------
# Layout of one cluster directory.

# Every path of one cluster under its root directory.
@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def slurm_conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        # slurmdbd has no option for its config: it reads slurmdbd.conf beside $SLURM_CONF.
        return self.root / "slurmdbd.conf"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def mysql(self) -> Path:
        return self.root / "mysql"

    @property
    def mysql_socket(self) -> Path:
        return self.run / "mysqld.sock"

    @property
    def owner_pid(self) -> Path:
        return self.run / "owner.pid"

    # The environment every client and daemon of this cluster runs with.
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf), DIR_TAG: str(self.root)}


# Ports of the four daemons, consecutive from `base`.
@dataclass(frozen=True)
class Ports:
    base: int

    @property
    def slurmctld(self) -> int:
        return self.base

    @property
    def slurmd(self) -> int:
        return self.base + 1

    @property
    def slurmdbd(self) -> int:
        return self.base + 2

    @property
    def mariadb(self) -> int:
        return self.base + 3

    def all(self) -> tuple[int, ...]:
        return (self.slurmctld, self.slurmd, self.slurmdbd, self.mariadb)


#----------------------------------------------------------------------------
# Small process helpers.

# Run a client command of the cluster; raise ClusterError with its output on failure.
def run(cmd: list[str], layout: Layout | None = None, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = layout.env() if layout is not None else None
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise ClusterError(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr).strip()}")
    return proc


# Start a daemon detached from our stdio (a caller capturing our output must not hang on it).
def spawn(cmd: list[str], layout: Layout) -> None:
    subprocess.Popen(cmd, env=layout.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


# Run a daemon that forks into the background; its stdio goes to /dev/null, errors to its log.
def daemonize(cmd: list[str], layout: Layout, log: Path) -> None:
    rc = subprocess.run(cmd, env=layout.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, timeout=60).returncode
    if rc != 0:
        raise ClusterError(f"`{' '.join(cmd)}` exited with {rc}; see {log}")


# Poll `probe` every 0.1 s until it is true; on timeout name what failed and show its log tail.
def wait_until(what: str, probe: Callable[[], bool], timeout_s: float,
               log: Path | None = None) -> None:
    t0 = time.monotonic()
    while not probe():
        if time.monotonic() - t0 > timeout_s:
            tail = ""
            if log is not None and log.exists():
                lines = log.read_text(errors="replace").splitlines()[-15:]
                tail = f"\nlast lines of {log}:\n" + "\n".join(lines)
            raise ClusterError(f"{what}: not ready after {timeout_s:.0f} s{tail}")
        time.sleep(0.1)


# True when something accepts TCP connections on 127.0.0.1:port.
def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# Live processes tagged as daemons of a cluster: {pid: (command name, cluster dir)}.
def tagged_processes() -> dict[int, tuple[str, Path]]:
    found = {}
    prefix = (DIR_TAG + "=").encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        for var in environ:
            if var.startswith(prefix):
                found[int(entry)] = (comm, Path(var[len(prefix):].decode()))
    return found


# The daemons of the cluster under `root`, grouped by command name.
def daemons_of(root: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for pid, (comm, tagged_root) in tagged_processes().items():
        if tagged_root == root and comm in STOP_ORDER:
            out.setdefault(comm, []).append(pid)
    return out


# True while `pid` exists and is not a zombie.
def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


#----------------------------------------------------------------------------
# install / check

# Binaries of the cluster that are not installed (sbin directories included).
def missing_binaries() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [b for b in BINARIES if shutil.which(b, path=path) is None]
    if not glob.glob("/usr/lib/*/slurm-wlm/auth_none.so") + glob.glob("/usr/lib*/slurm/auth_none.so"):
        missing.append("auth_none.so (the auth/none plugin; this script needs Slurm 22.05)")
    return missing


# Install the packages with apt-get (waits for the dpkg lock), then verify the binaries.
def install() -> None:
    if os.geteuid() != 0:
        raise ClusterError("install needs root: run it as root, or run "
                           f"`sudo apt-get install {' '.join(PACKAGES)}`")
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    t0 = time.monotonic()
    for args in (["update"], ["install", "-y", "--no-install-recommends", *PACKAGES]):
        print(f"+ {' '.join(apt + args)}", flush=True)
        if subprocess.run(apt + args, env=env).returncode != 0:
            raise ClusterError(f"`apt-get {args[0]}` failed (see its output above)")
    missing = missing_binaries()
    if missing:
        raise ClusterError(f"installed {' '.join(PACKAGES)} but still missing: {', '.join(missing)}")
    print(f"installed in {time.monotonic() - t0:.1f} s")


#----------------------------------------------------------------------------
# Configuration files.

# The node line from `slurmd -C`, with 10 % of the memory held back so the node is never
# drained for having less memory than configured.
def node_line() -> tuple[str, str]:
    first = run(["slurmd", "-C"]).stdout.splitlines()[0]
    fields = dict(kv.split("=", 1) for kv in first.split())
    fields["RealMemory"] = str(int(int(fields["RealMemory"]) * 0.9))
    fields.update(NodeAddr="127.0.0.1", State="UNKNOWN")
    return fields["NodeName"], " ".join(f"{k}={v}" for k, v in fields.items())


# slurm.conf: auth/none, accounting through slurmdbd, one partition, fast requeue.
def slurm_conf(layout: Layout, ports: Ports, max_array_size: int) -> str:
    node_name, node = node_line()
    d = layout
    return f"""\
# Generated by slurm/localhost/cluster.py for the cluster under {d.root}; rewritten on every start.
ClusterName={CLUSTER_NAME}
SlurmctldHost={node_name}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
# auth/none and cred/none ship with slurm-wlm 22.05: no munged needed on one node.
AuthType=auth/none
CredType=cred/none
# A requeued job may start again cred_expire + 1 s after it ended (default 120 s).
AuthInfo=cred_expire=5
SlurmctldPort={ports.slurmctld}
SlurmdPort={ports.slurmd}
StateSaveLocation={d.state}
SlurmdSpoolDir={d.spool}
SlurmctldPidFile={d.run}/slurmctld.pid
SlurmdPidFile={d.run}/slurmd.pid
SlurmctldLogFile={d.log}/slurmctld.log
SlurmdLogFile={d.log}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Scheduling passes every 2 s (default 60 s), so a requeued job runs again within seconds.
SchedulerParameters=sched_interval=2,bf_interval=5
# Deliver the job's --signal (submitit's USR2) on preemption as well as before the time limit.
SlurmctldParameters=preempt_send_user_signal
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports.slurmdbd}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
# Arrays hold at most this many tasks (indices 0 .. MaxArraySize-1).
MaxArraySize={max_array_size}
{node}
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime={PARTITION_MAX_TIME_MIN} State=UP
"""


# slurmdbd.conf: MariaDB on 127.0.0.1 at the cluster's own port.
def slurmdbd_conf(layout: Layout, ports: Ports) -> str:
    return f"""\
# Generated by slurm/localhost/cluster.py; rewritten on every start.
AuthType=auth/none
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports.slurmdbd}
SlurmUser=root
PidFile={layout.run}/slurmdbd.pid
LogFile={layout.log}/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports.mariadb}
StorageUser=slurm
StorageLoc=slurm_acct_db
"""


#----------------------------------------------------------------------------
# start

# Start MariaDB on its own data directory (initialised on first use) and grant slurmdbd.
def start_mariadb(layout: Layout, ports: Ports) -> None:
    if not (layout.mysql / "mysql").is_dir():
        with open(layout.log / "mariadb-install-db.log", "w") as out:
            rc = subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root",
                                 f"--datadir={layout.mysql}", "--skip-test-db",
                                 "--auth-root-authentication-method=socket"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out).returncode
        if rc != 0:
            raise ClusterError(f"mariadb-install-db failed; see {layout.log}/mariadb-install-db.log")
    # --no-defaults ignores /etc/mysql (port 3306, /run/mysqld); slurmdbd connects over TCP.
    spawn(["mariadbd", "--no-defaults", "--user=root", f"--datadir={layout.mysql}",
           "--bind-address=127.0.0.1", f"--port={ports.mariadb}",
           f"--socket={layout.mysql_socket}", f"--pid-file={layout.run}/mariadbd.pid",
           f"--log-error={layout.log}/mariadb.log", "--skip-name-resolve",
           "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M",
           "--innodb-lock-wait-timeout=900", "--innodb-flush-log-at-trx-commit=0",
           "--innodb-doublewrite=0"], layout)
    client = ["--no-defaults", f"--socket={layout.mysql_socket}"]
    wait_until("MariaDB", lambda: run(["mariadb-admin", *client, "ping"], check=False).returncode == 0,
               60, layout.log / "mariadb.log")
    # With --skip-name-resolve the grant must name the address slurmdbd connects from.
    run(["mariadb", *client, "-e",
         "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1'; "
         "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"])


# Start slurmdbd and register the cluster (slurmctld needs both before its first start).
def start_slurmdbd(layout: Layout, ports: Ports) -> None:
    daemonize(["slurmdbd"], layout, layout.log / "slurmdbd.log")
    wait_until("slurmdbd", lambda: port_open(ports.slurmdbd), 30, layout.log / "slurmdbd.log")
    clusters = run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"], layout).stdout.split()
    if CLUSTER_NAME not in clusters:
        run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME], layout)


# Start slurmctld, then slurmd once the controller answers (else slurmd waits ~10 s to register).
def start_slurm(layout: Layout) -> None:
    daemonize(["slurmctld", "-i"], layout, layout.log / "slurmctld.log")
    wait_until("slurmctld", lambda: "UP" in run(["scontrol", "ping"], layout, check=False).stdout,
               30, layout.log / "slurmctld.log")
    daemonize(["slurmd"], layout, layout.log / "slurmd.log")
    wait_until("slurmd (node idle)",
               lambda: run(["sinfo", "-h", "-N", "-o", "%T"], layout, check=False).stdout.strip() == "idle",
               30, layout.log / "slurmd.log")


# Run one tiny job and wait until it is COMPLETED in both slurmctld and sacct; this also absorbs
# the controller's first scheduling pass, so the caller's first job starts at once.
def smoke_job(layout: Layout) -> None:
    job_id = run(["sbatch", "--parsable", f"--partition={PARTITION}", "--job-name=smoke",
                  f"--output={layout.log}/smoke-%j.out", "--wrap", "srun true"], layout).stdout.strip()

    def state() -> str:
        out = run(["scontrol", "show", "job", "-o", job_id], layout, check=False).stdout
        match = re.search(r"JobState=(\S+)", out)
        return match.group(1) if match else "UNKNOWN"

    def finished() -> bool:
        s = state()
        if s in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"):
            raise ClusterError(f"smoke job {job_id} ended {s}; see {layout.log}/smoke-{job_id}.out")
        return s == "COMPLETED"

    wait_until(f"smoke job {job_id}", finished, 60, layout.log / "slurmctld.log")
    wait_until(f"smoke job {job_id} in sacct",
               lambda: run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], layout,
                           check=False).stdout.strip() == "COMPLETED", 30, layout.log / "slurmdbd.log")


# Stop the clusters whose starting process (`--owner-pid`) is gone, e.g. a killed test session.
def stop_orphaned_clusters(root: Path) -> None:
    roots = {r for _, r in tagged_processes().values() if r != root}
    for other in sorted(roots):
        owner = Layout(other).owner_pid
        if owner.exists() and not alive(int(owner.read_text())):
            print(f"stopping the cluster under {other}: its owner (pid {owner.read_text().strip()}) is gone")
            stop(other)


# Write the configuration and start MariaDB, slurmdbd, slurmctld and slurmd, in that order
# (slurmctld without slurmdbd dies: "we have no TRES from it"); stops everything on failure.
def start(root: Path, port_base: int, max_array_size: int, owner_pid: int | None) -> None:
    layout, ports = Layout(root), Ports(port_base)
    if daemons_of(root):
        raise ClusterError(f"a cluster is already running under {root}; stop it first")
    stop_orphaned_clusters(root)
    busy = [p for p in ports.all() if port_open(p)]
    if busy:
        holders = sorted({str(r) for _, r in tagged_processes().values()})
        hint = (f" by the cluster under {', '.join(holders)} (stop it with `cluster.py stop DIR`)"
                if holders else "")
        raise ClusterError(f"ports {busy} are in use{hint}; or choose other ports with --port-base")
    t0 = time.monotonic()
    for d in (layout.state, layout.spool, layout.run, layout.log):
        d.mkdir(parents=True, exist_ok=True)
    layout.slurm_conf.write_text(slurm_conf(layout, ports, max_array_size))
    layout.slurmdbd_conf.write_text(slurmdbd_conf(layout, ports))
    layout.slurmdbd_conf.chmod(0o600)  # slurmdbd refuses a readable file
    if owner_pid is not None:
        layout.owner_pid.write_text(f"{owner_pid}\n")
    try:
        start_mariadb(layout, ports)
        start_slurmdbd(layout, ports)
        start_slurm(layout)
        smoke_job(layout)
    except BaseException:
        stop(root)
        raise
    print(f"cluster {CLUSTER_NAME!r} up under {root} in {time.monotonic() - t0:.1f} s "
          f"(partition {PARTITION}, MaxArraySize={max_array_size}, accounting on)")
    print(f"export SLURM_CONF={layout.slurm_conf}")


#----------------------------------------------------------------------------
# stop / status / env

# Send `sig` to `pids` and wait up to `timeout_s` for them to exit; returns those still alive.
def signal_and_wait(pids: list[int], sig: int, timeout_s: float) -> list[int]:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


# Cancel all jobs, then stop slurmd, slurmctld, slurmdbd and MariaDB (SIGTERM, then SIGKILL).
def stop(root: Path) -> None:
    layout = Layout(root)
    daemons = daemons_of(root)
    if not daemons:
        print(f"no cluster running under {root}")
        return
    t0 = time.monotonic()
    if "slurmctld" in daemons and "slurmd" in daemons:
        # Jobs run under slurmstepd, which outlives slurmd: cancel them while slurmd can.
        run(["scancel", f"--partition={PARTITION}"], layout, check=False, timeout=30)
        try:
            wait_until("cancelled jobs",
                       lambda: not run(["squeue", "-h"], layout, check=False).stdout.strip(), 15)
        except ClusterError as e:
            print(f"warning: {e}", file=sys.stderr)
    for group in (("slurmd", "slurmctld"), ("slurmdbd",), ("mariadbd",)):
        pids = [p for name in group for p in daemons.get(name, [])]
        left = signal_and_wait(pids, signal.SIGTERM, 15)
        if left:
            print(f"warning: {group} did not stop on SIGTERM; killing {left}", file=sys.stderr)
            signal_and_wait(left, signal.SIGKILL, 5)
    print(f"cluster under {root} stopped in {time.monotonic() - t0:.1f} s")


# Describe the cluster: daemons, nodes, partitions, accounting. Returns 0 when all is up.
def status(root: Path) -> int:
    layout = Layout(root)
    require_config(layout)
    daemons = daemons_of(root)
    print(f"cluster under {root}")
    for name in reversed(STOP_ORDER):
        print(f"  {name:<10} {'pid ' + ','.join(map(str, daemons[name])) if name in daemons else 'down'}")
    healthy = all(name in daemons for name in STOP_ORDER)
    if "slurmctld" in daemons:
        nodes = run(["sinfo", "-N", "-h", "-o", "%N %T cpus=%c mem=%mMB"], layout, check=False).stdout
        print("nodes:\n" + "".join(f"  {line}\n" for line in nodes.splitlines()), end="")
        parts = run(["scontrol", "show", "partition", "-o"], layout, check=False).stdout
        print("partitions:")
        for line in parts.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            print(f"  {f.get('PartitionName')} state={f.get('State')} default={f.get('Default')} "
                  f"max_time={f.get('MaxTime')} nodes={f.get('Nodes')}")
        limit = re.search(r"MaxArraySize\s*=\s*(\d+)", run(["scontrol", "show", "config"], layout,
                                                          check=False).stdout)
        print(f"  MaxArraySize={limit.group(1) if limit else '?'}")
        healthy &= "idle" in nodes or "alloc" in nodes or "mix" in nodes
    acct = run(["sacct", "-n", "-X", "-P", "-a", "-S", "2000-01-01", "-o", "JobID"], layout, check=False)
    if acct.returncode == 0:
        print(f"accounting: up ({len(acct.stdout.split())} jobs recorded)")
    else:
        print(f"accounting: down ({acct.stderr.strip()})")
        healthy = False
    return 0 if healthy else 1


# Fail unless `start` has written a configuration under the directory.
def require_config(layout: Layout) -> None:
    if not layout.slurm_conf.exists():
        raise ClusterError(f"no cluster configured under {layout.root}: run `cluster.py start {layout.root}`")


#----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="apt-get install the daemons and clients (root)")
    sub.add_parser("check", help="exit 1 and name what is missing unless everything is installed")
    p = sub.add_parser("start", help="configure and start a cluster under DIR")
    p.add_argument("dir", type=Path)
    p.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE,
                   help="slurmctld port; slurmd, slurmdbd and MariaDB use the next three")
    p.add_argument("--max-array-size", type=int, default=DEFAULT_MAX_ARRAY_SIZE,
                   help="MaxArraySize: the most tasks one job array may hold")
    p.add_argument("--owner-pid", type=int, default=None,
                   help="a later start stops this cluster once that process is gone")
    for name, text in (("stop", "cancel all jobs and stop the cluster under DIR"),
                       ("status", "describe daemons, nodes, partitions and accounting"),
                       ("env", "print the shell line that points clients at the cluster")):
        sub.add_parser(name, help=text).add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    root = args.dir.resolve() if hasattr(args, "dir") else None
    try:
        if args.command == "install":
            install()
        elif args.command == "check":
            missing = missing_binaries()
            if missing:
                print(f"missing: {', '.join(missing)}")
                return 1
            print("all SLURM and MariaDB binaries are installed")
        elif args.command == "start":
            start(root, args.port_base, args.max_array_size, args.owner_pid)
        elif args.command == "stop":
            stop(root)
        elif args.command == "status":
            return status(root)
        elif args.command == "env":
            require_config(Layout(root))
            print(f"export SLURM_CONF={Layout(root).slurm_conf}")
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
