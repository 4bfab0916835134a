"""Which process of a cell failed first, and how (docs/distributed.md, "When something fails").

Every process of a group beats: a daemon thread adds 1 to the process's counter in the group's
store (rank 0 hosts it) every BEAT_S. A process that fails (any exception, its own or a collective
broken by another process) calls `first_failure`: for SILENT_S it watches whether another
process has already named the failure, then looks whose counters did not move. It names the first
failure with one compare-and-set in the store, so exactly one process wins: a process whose
heartbeat stopped (killed by a signal or the out-of-memory killer, lost with its node, or hung),
else itself (it raised). A process that leaves normally (its share of the cell done) says so
when it exits, so its silence is not taken for a failure. The winner writes the cell's failure
record; the others only log.

When the store cannot be reached, its host, rank 0, is gone: every surviving process names rank 0,
and the record store keeps the first of their records (one record per attempt).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

BEAT_S = 0.5                 # a heartbeat this often
SILENT_S = 2.0               # a process without a heartbeat for this long has stopped
TAIL_LINES = 6               # lines of a traceback kept in a failure's summary
FIRST_KEY = "failure/first"  # the store key of the first failure of the job

#----------------------------------------------------------------------------


def _beat_key(rank: int) -> str:
    return f"beat/{rank}"


def _left_key(rank: int) -> str:
    return f"left/{rank}"


# This process's heartbeat in the group's store (a TCPStore): a daemon thread on its own client of
# the store (a client is not shared between threads), stopped when the store is gone, or at exit,
# saying the process left (`stop`).
class Heartbeat:
    def __init__(self, store: Any, rank: int):
        import torch.distributed as dist
        self.store = dist.TCPStore(store.host, store.port, is_master=False, timeout=store.timeout,
                                   wait_for_workers=False)
        self.key, self.rank = _beat_key(rank), rank
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{rank}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.store.add(self.key, 1)
            except Exception:                  # the store's host has gone: nothing left to tell
                return
            self.stopped.wait(BEAT_S)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=2 * BEAT_S)
        try:
            self.store.set(_left_key(self.rank), "1")
        except Exception:
            pass


# The first failure of a cell's processes.
@dataclass(frozen=True)
class Failure:
    rank: int                # the process that failed first
    world_size: int
    kind: str                # "raised" (a Python exception) or "stopped" (no exception: killed, lost, hung)
    type: str                # the exception's class name, or "ProcessStopped"
    message: str
    traceback_tail: str      # the last lines of that process's traceback ("" when it stopped)
    reporter: int            # the process that named it

    # One line for records and summaries: which process, what.
    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}: {self.message}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# The last TAIL_LINES non-empty lines of a formatted traceback.
def traceback_tail(tb: str) -> str:
    return "\n".join([line for line in tb.splitlines() if line.strip()][-TAIL_LINES:])


# The failure of this process alone (`error`, formatted as `tb`).
def own_failure(rank: int, world_size: int, error: BaseException, tb: str) -> Failure:
    return Failure(rank, world_size, "raised", type(error).__name__, str(error) or repr(error),
                   traceback_tail(tb), rank)


# Name the first failure of the group after this process (`rank`) failed with `error`; returns it
# and whether this process records it (it won the store's compare-and-set, or the store is gone).
def first_failure(store: Any, rank: int, world_size: int, error: BaseException, tb: str) -> tuple[Failure, bool]:
    mine = own_failure(rank, world_size, error, tb)
    try:
        others = [k for k in range(world_size) if k != rank]
        before = {k: store.add(_beat_key(k), 0) for k in others}
        deadline = time.monotonic() + SILENT_S
        while time.monotonic() < deadline and not store.check([FIRST_KEY]):
            time.sleep(0.1)
        if store.check([FIRST_KEY]):
            return Failure(**json.loads(store.get(FIRST_KEY))), False
        stopped = [k for k in others if store.add(_beat_key(k), 0) == before[k] and not store.check([_left_key(k)])]
        if stopped:
            mine = Failure(stopped[0], world_size, "stopped", "ProcessStopped", (
                f"stopped without a Python error (no heartbeat for {SILENT_S:g} s): killed by a signal or the "
                f"out-of-memory killer, lost with its node, or hung; rank {rank} then failed with "
                f"{mine.type}: {mine.message}"), "", rank)
        named = store.compare_set(FIRST_KEY, "", mine.to_json()).decode()
    except Exception as store_error:           # the store is unreachable: its host, rank 0, is gone
        if rank == 0:
            return mine, True
        return Failure(0, world_size, "stopped", "ProcessStopped", (
            f"gone: the group's store, which rank 0 hosts, is unreachable ({type(store_error).__name__}: "
            f"{store_error}); rank {rank} then failed with {mine.type}: {mine.message}"), "", rank), True
    return Failure(**json.loads(named)), named == mine.to_json()
