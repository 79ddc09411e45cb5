"""Process hygiene for the commands that start other processes (``temporal-airflow run`` and ``up``).

Whatever ends such a command (Ctrl-C, a second Ctrl-C during shutdown, SIGTERM from a service manager
or a background shell, or SIGKILL) must not leave a process behind. Three Linux tools do it:

* ``PR_SET_PDEATHSIG``: a child started with :func:`die_with_parent` gets a signal when the thread that
  started it dies, even by SIGKILL (start children from the main thread);
* ``PR_SET_CHILD_SUBREAPER``: orphans anywhere below a subreaper are re-parented to it rather than to
  init, so :func:`stop_descendants` finds every one of them, daemons of daemons included;
* :class:`ShutdownSignals`: the first SIGINT or SIGTERM starts one orderly shutdown, later ones only
  say that it is under way (no ``KeyboardInterrupt`` traceback half-way through a cleanup).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TextIO

import psutil

# One copy for the CLI and the task host (models is the package both may import).
from temporal_airflow.models.processes import die_with_parent as die_with_parent

_PR_SET_CHILD_SUBREAPER = 36
# Loaded before any fork: the pre-exec hook must not import or load anything in the child.
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def become_subreaper() -> None:
    """Adopt every orphan among this process's descendants (Linux only; elsewhere a no-op)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def stop_processes(processes: Iterable[psutil.Process], grace: float = 10.0) -> None:
    """SIGTERM ``processes``, then SIGKILL the ones still alive after ``grace`` seconds."""
    alive = []
    for process in processes:
        try:
            process.terminate()
            alive.append(process)
        except psutil.NoSuchProcess:
            continue
    _, left = psutil.wait_procs(alive, timeout=grace)
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=grace)


def stop_descendants(grace: float = 10.0) -> None:
    """Stop every process still running below this one (orphans too, in a subreaper) and reap it."""
    stop_processes(psutil.Process().children(recursive=True), grace)


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Children started in this block ignore SIGINT for life.

    A terminal's Ctrl-C goes to its whole foreground process group; a helper that its parent stops in
    order (after the work it serves) must not die first, with a traceback.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


class ShutdownSignals:
    """SIGTERM, and SIGINT unless it was ignored at start (a background job), call ``on_first`` once.

    A signal that arrives while the shutdown runs only prints ``Still stopping ...`` on ``out``.
    ``received`` is the first signal's number, 0 until one arrived.
    """

    def __init__(self, on_first: Callable[[], object], out: TextIO) -> None:
        self.on_first = on_first
        self.out = out
        self.received = 0

    def install(self) -> ShutdownSignals:
        signal.signal(signal.SIGTERM, self._handle)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._handle)
        return self

    def install_on(self, loop: asyncio.AbstractEventLoop) -> ShutdownSignals:
        """:meth:`install` for an event loop: through its wakeup descriptor, so a signal the kernel hands
        to another thread (the SDK's runtime has many) still wakes the loop at once."""
        loop.add_signal_handler(signal.SIGTERM, self._handle, signal.SIGTERM, None)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            loop.add_signal_handler(signal.SIGINT, self._handle, signal.SIGINT, None)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received:
            print("Still stopping, please wait ...", file=self.out, flush=True)
            return
        self.received = signum
        print(f"\n{signal.Signals(signum).name}: stopping ...", file=self.out, flush=True)
        self.on_first()
