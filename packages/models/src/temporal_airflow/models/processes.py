"""Children that die with their parent: the one ``PR_SET_PDEATHSIG`` helper of every package.

The CLI starts servers and workers, the activity worker's task host forks a process per try; none of
them may outlive the process that started it, even when that one is SIGKILLed. Both use
:func:`die_with_parent` (the CLI cannot be imported by the activity worker, so it lives here, beside the
other settings every process shares). Standard library only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the pre-exec hook must not import or load anything in the child.
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> Callable[[], None]:
    """A hook to call in a new child (a ``preexec_fn`` for :class:`subprocess.Popen`, or right after
    ``os.fork()``): the child gets ``sig`` when its parent dies.

    The parent is this process (make the hook before forking) unless given: a process started by another
    arms itself with ``die_with_parent(sig, parent=os.getppid())()``. The parent may die before the
    ``prctl``; the child then signals itself. Linux only (elsewhere a no-op). Fork from the main thread:
    the signal follows the *thread* that forked.
    """
    parent = os.getpid() if parent is None else parent

    def arm() -> None:
        if _libc is None:
            return
        _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return arm
