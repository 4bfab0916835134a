"""The group's store beside collectives, on a real TCPStore in this process: rank 0's word passed
to the others (`Processes.share`: waited for outside collectives, logged, in step), and the first
failure of a cell named once (`harness.contracts.failures`): the process that raised, or a process whose
heartbeat stopped, never one that left normally. The end-to-end cases (processes killed, hung,
gone with the store) are in test_process_faults.py."""
from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any, Iterator

import pytest
import torch.distributed as dist

from harness.contracts import distributed, failures
from harness.contracts.distributed import Processes, processes_over


@pytest.fixture
def store() -> Iterator[Any]:
    yield dist.TCPStore("127.0.0.1", 0, None, is_master=True, timeout=dt.timedelta(seconds=30), wait_for_workers=False)


# Process `rank` of 2 on its own client of the store.
def process(store: Any, rank: int) -> Processes:
    return processes_over(dist.TCPStore(store.host, store.port, is_master=False, wait_for_workers=False), rank, 2)


def test_rank_0_word_reaches_the_others_outside_collectives_logged_and_in_step(store, monkeypatch) -> None:
    monkeypatch.setattr(distributed, "WAIT_QUIET_S", 0.2)
    main, other = process(store, 0), process(store, 1)
    threading.Timer(1.0, lambda: main.share("cache hit", True)).start()
    with pytest.raises(ValueError, match="process 1 of 2 needs the group's store"):
        Processes(1, 2)
    lines: list[str] = []
    assert other.share("cache hit", waiting_for="whether cache entry x exists", log=lines.append) is True
    assert len(lines) == 1 and lines[0].startswith("waiting for rank 0 (whether cache entry x exists): ")
    assert lines[0].endswith(" min so far, outside collectives")
    main.share("claim", False)
    with pytest.raises(RuntimeError, match="the processes are out of step: rank 0 shared 'claim' where rank 1 "
                                           "expected 'curve point'"):
        other.share("curve point")


def _raise(message: str) -> BaseException:
    try:
        raise ValueError(message)
    except ValueError as e:
        return e


def test_the_process_that_raised_is_named_once(store) -> None:
    beat = failures.Heartbeat(store, 0)                     # rank 0 alive, failing in a collective later
    try:
        failure, records_it = failures.first_failure(store, 1, 2, _raise("boom"), "Traceback\nValueError: boom\n")
        assert records_it and (failure.rank, failure.kind, failure.type) == (1, "raised", "ValueError")
        assert failure.describe() == "rank 1 of 2: boom" and failure.traceback_tail == "Traceback\nValueError: boom"
        start = time.monotonic()
        again, records_it = failures.first_failure(store, 0, 2, _raise("connection closed"), "")
        assert again == failure and not records_it and time.monotonic() - start < failures.SILENT_S
    finally:
        beat.stop()


def test_a_silent_process_is_named_and_one_that_left_is_not(store) -> None:
    left = failures.Heartbeat(store, 2)
    alive = failures.Heartbeat(store, 1)
    left.stop()                                                # its share done: it says so and exits
    try:
        failure, records_it = failures.first_failure(store, 0, 4, _raise("connection closed"), "")
    finally:
        alive.stop()
    assert records_it and (failure.rank, failure.kind, failure.type, failure.reporter) == (3, "stopped", "ProcessStopped", 0)
    assert failure.describe().startswith("rank 3 of 4: stopped without a Python error (no heartbeat for 2 s)")
    assert failure.message.endswith("rank 0 then failed with ValueError: connection closed")
