"""Stopping a run cleanly on SIGTERM (a scheduler's preemption) or Ctrl-C (SIGINT).

The first signal asks the loop to stop at its next boundary, save a checkpoint and end with
PREEMPTED_STATUS, which tells a scheduler that requeues failed jobs to run it again (the
rerun resumes). Before the first loop and after the last save there is nothing to save:
SIGTERM ends the process there, Ctrl-C raises KeyboardInterrupt as usual. Loops are kept short (`keras_resnet.training.loop.LOOP_SECONDS`), so a
boundary comes within about a second. Python runs signal handlers only between bytecodes,
and the main thread may be blocked inside TensorFlow for good (an input pipeline that
delivers nothing), so a watchdog thread learns of each signal through `signal.set_wakeup_fd`
at once: when no boundary is reached within the grace time, or at a second signal, it ends
the process itself with PREEMPTED_STATUS and one line saying which checkpoint is the last,
but never while a checkpoint is being written (the save finishes first, so no half
checkpoint is left).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time

PREEMPTED_STATUS = 75  # EX_TEMPFAIL of sysexits.h: "temporary failure, try again"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_SECONDS = 10.0


class StopRequest:
    """Whether a stop was asked for, shared by the loop (main thread) and the watchdog.

    `last_checkpoint()` -> a short text naming the newest checkpoint, for the watchdog's
    line; `on_exit()` runs before the watchdog ends the process (releasing the run's lock).
    """

    def __init__(self, last_checkpoint=lambda: "none", on_exit=lambda: None, grace_seconds=GRACE_SECONDS):
        self.last_checkpoint = last_checkpoint
        self.on_exit = on_exit
        self.grace_seconds = grace_seconds
        self.signal_name = None
        self.loop_seconds = 0.0  # the last loop's duration, set by the loop: the grace grows with it
        self.answered = False  # set by the loop when it starts its final save
        self.in_loop = False  # from the first loop to the last save; outside it there is nothing to save
        self._requested = threading.Event()
        self._saving = threading.Lock()

    @property
    def requested(self):
        return self._requested.is_set()

    def request(self, signum):
        self.signal_name = signal.Signals(signum).name
        self._requested.set()

    @contextlib.contextmanager
    def saving(self):
        """While a checkpoint is written the watchdog waits instead of ending the process."""
        with self._saving:
            yield

    def deadline(self, since):
        return since + self.grace_seconds + 2 * self.loop_seconds

    def end_process(self, reason):
        """Wait for a save in progress, say why, and exit with PREEMPTED_STATUS."""
        with self._saving:
            with contextlib.suppress(Exception):
                self.on_exit()
            sys.stderr.write(
                f"{self.signal_name}: {reason}; exiting with status {PREEMPTED_STATUS}: the last checkpoint is "
                f"{self.last_checkpoint()} (rerun the same command to resume)\n"
            )
            sys.stderr.flush()
            os._exit(PREEMPTED_STATUS)


def _watch(stop, reader):
    """The watchdog: reads signal numbers from the wakeup socket until it is closed."""
    signalled_at = None
    while True:
        waiting = signalled_at is not None and not stop.answered
        reader.settimeout(max(0.0, stop.deadline(signalled_at) - time.monotonic()) if waiting else None)
        try:
            data = reader.recv(64)
        except TimeoutError:
            data = None
        except OSError:
            return
        if data == b"":
            return
        for signum in [s for s in data or b"" if s in STOP_SIGNALS]:
            if signalled_at is None and not stop.in_loop:
                if signum == signal.SIGTERM:  # Ctrl-C is the main thread's KeyboardInterrupt there
                    stop.request(signum)
                    stop.end_process("received outside the training loop")
            elif signalled_at is None:
                stop.request(signum)
                signalled_at = time.monotonic()
            else:
                stop.end_process(f"a second signal ({signal.Signals(signum).name})")
        if signalled_at is not None and not stop.answered and time.monotonic() >= stop.deadline(signalled_at):
            seconds = stop.deadline(signalled_at) - signalled_at
            stop.end_process(f"no loop boundary reached within {seconds:.0f} s (is the input pipeline stuck?)")


@contextlib.contextmanager
def stop_requests(stop):
    """Route SIGTERM and SIGINT to `stop` (a StopRequest) and its watchdog while the block
    runs; handlers restored on exit. Off the main thread (where signals cannot be caught)
    nothing is routed and `stop.requested` stays False."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)

    def interrupt_outside_the_loop(signum, frame):
        if signum == signal.SIGINT and not stop.in_loop:
            raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt_outside_the_loop) for signum in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch, args=(stop, reader), name="preemption-watchdog", daemon=True)
    watchdog.start()
    try:
        yield stop
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        writer.close()
        watchdog.join(timeout=5)
        reader.close()
