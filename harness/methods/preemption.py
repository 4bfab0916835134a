"""Checkpoint at a step boundary when SLURM signals a job (USR2 before its time limit, or on
preemption), then let submitit requeue it.

submitit's USR2 handler (installed before the job's callable starts) calls the callable's
`checkpoint()`, runs `scontrol requeue` and exits, all from inside the signal handler, i.e. at
whatever bytecode the job was executing, possibly between an optimiser step and its EMA update.
A training loop therefore cannot save its state from there. Inside `safe_points()` the signal is
deferred instead: the handler only notes it, and the loop calls `safe_point(save)` after every
step; the first call after the signal saves the checkpoint and then hands over to submitit's
handler (requeue and exit). If no step boundary comes within the grace period (a step longer
than that, or a stage with no safe points), submitit's handler runs anyway and the run resumes
from its last periodic checkpoint (`distill.checkpoint_every`). Outside a submitit job (debug,
tests, plain scripts) `safe_points()` changes nothing.

A cell over several processes (every task of the job gets the signal, not necessarily between
the same steps) agrees at each step boundary whether any process was signalled (`agree`, an
all-reduce), so all stop at the same step; rank 0 saves and requeues, the others wait for the
requeue to end them (`await_requeue`).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator

DEFAULT_GRACE_S = 45.0
PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"   # submitit's own variable; USR2 by default

_grace_s = DEFAULT_GRACE_S

#----------------------------------------------------------------------------


# Set how long a signalled job waits for the next step boundary (the SLURM job sets half the
# profile's `signal_delay_s`, so the save and the requeue fit before the time limit).
def set_grace(seconds: float) -> None:
    global _grace_s
    _grace_s = max(1.0, float(seconds))


# The signal submitit checkpoints on.
def preempt_signal() -> signal.Signals:
    return getattr(signal, "SIG" + os.environ.get(PREEMPT_SIGNAL_ENV, "USR2"))


# One deferred signal: noted by the handler, served at the next safe point (or by the timer).
class _Deferral:
    def __init__(self, sig: signal.Signals, handler: Callable[[int, FrameType | None], Any],
                 grace_s: float, agree: Callable[[bool], bool], after_hand_over: Callable[[], None] | None):
        self.sig, self.handler, self.grace_s = sig, handler, grace_s
        self.agree, self.after_hand_over = agree, after_hand_over
        self.pending: tuple[int, FrameType | None] | None = None
        self.timer: threading.Timer | None = None
        self.handed_over = False

    # The signal handler while deferring: note the signal and start the grace timer; a second
    # signal (the timer's, or SLURM's again) hands over at once.
    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is not None:
            self.hand_over()
            return
        self.pending = (signum, frame)
        self.timer = threading.Timer(self.grace_s, os.kill, (os.getpid(), signum))
        self.timer.daemon = True
        self.timer.start()

    # Called by the loop between steps: if signalled (any process, by `agree`), save, then let
    # submitit requeue and exit.
    def safe_point(self, save: Callable[[], None]) -> None:
        if not self.agree(self.pending is not None):
            return
        self.stop_timer()
        save()
        self.hand_over()
        if self.after_hand_over is not None:
            self.after_hand_over()

    # Let submitit's handler checkpoint, requeue and exit. A duplicate signal (the timer's, sent
    # just before it was stopped) is ignored meanwhile, so the job is never requeued twice.
    def hand_over(self) -> None:
        signum, frame = self.pending or (int(self.sig), None)
        self.pending = None
        self.stop_timer()
        self.handed_over = True
        signal.signal(self.sig, signal.SIG_IGN)
        self.handler(signum, frame)          # submitit: checkpoint(), scontrol requeue, exit
        signal.signal(self.sig, self.handler)  # it returned (not rank 0): later signals count

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


# A process other than rank 0 after the hand-over (submitit's handler returns there): wait for
# rank 0's requeue to end the job, and leave by itself after the grace period.
def await_requeue() -> None:
    time.sleep(_grace_s)
    raise SystemExit(-1)


# Within this block the preemption signal is deferred to the next `safe_point(save)` call
# (yielded); a signal that arrives after the last safe point is served when the block ends.
# `agree(signalled)` says whether any process of the cell was signalled (alone: `signalled`);
# `after_hand_over` runs on a process whose hand-over returned.
@contextmanager
def safe_points(agree: Callable[[bool], bool] = lambda signalled: signalled,
                after_hand_over: Callable[[], None] | None = None
                ) -> Iterator[Callable[[Callable[[], None]], None]]:
    sig = preempt_signal()
    handler = signal.getsignal(sig) if threading.current_thread() is threading.main_thread() else None
    if not callable(handler):                # no submitit job (or not the main thread)
        yield lambda save: None
        return
    deferral = _Deferral(sig, handler, _grace_s, agree, after_hand_over)
    signal.signal(sig, deferral.on_signal)
    try:
        yield deferral.safe_point
    except BaseException:                    # e.g. submitit's exit after the hand-over
        deferral.stop_timer()
        if not deferral.handed_over:
            signal.signal(sig, handler)
        raise
    if deferral.pending is not None:
        deferral.hand_over()
    deferral.stop_timer()
    signal.signal(sig, handler)
