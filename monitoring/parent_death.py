"""Processes that end with their parent: the Linux parent-death signal (prctl PR_SET_PDEATHSIG).

Two users: BentoML's server workers, which the arbiter starts in a process group of their own (a
signal to the arbiter's group, or a SIGKILL of the arbiter, would leave them serving and holding
their port), and the re-optimisation build (`monitoring.buildproc`), which must not outlive the
server. Caveat: the signal fires when the *thread* that started the process ends, so the starter
must be a thread that lives as long as the child (a main thread, the trigger's worker).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(signal_number: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Have this process receive `signal_number` when its parent exits; returns whether it could
    (False off Linux). `parent` is the pid the caller expects as its parent (default: the current
    one); if the parent is already gone, the signal is sent at once.

    Raises OSError if prctl(2) refuses.
    """
    if not sys.platform.startswith("linux"):
        return False
    expected = os.getppid() if parent is None else parent
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal_number), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if os.getppid() != expected or expected == 1:  # the parent exited before the request took effect
        os.kill(os.getpid(), signal_number)
    return True
