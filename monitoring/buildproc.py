"""The rebuild's child process: it yields the CPU to serving and never outlives the server.

A re-optimisation is a separate `optimise` process on the serving machine (an
~820 MB build for MiniLM). Three things keep it from hurting serving:

- Priority: it runs at niceness 19, the lowest CPU priority, so requests are
  served first and the build gets what is left.
- Threads: the OpenMP (torch intra-op), MKL, OpenBLAS, numexpr and tokenizers pools are limited
  to one through the environment (`YIELD_ENV`). ONNX Runtime sessions inside
  the build keep the thread count their profile sets explicitly; at niceness 19
  they only run on idle CPU.
- Lifetime: it is started in its own session (its own process group: one
  signal stops it and whatever it starts, and a terminal's Ctrl-C reaches the
  server, not the build); `stop` terminates that group and waits. If the server
  is killed hard (SIGKILL, OOM), Linux's PR_SET_PDEATHSIG kills the build with
  it.

How: `start` runs the command through this module's `main` (`python -m
monitoring.buildproc PARENT_PID -- COMMAND...`), a tiny wrapper that lowers
its own priority, asks for the death signal, checks that the server is still
its parent (it may have died before the request took effect), then execs the
command: niceness and the death signal both survive exec, and the build is
one process, not two. This avoids `subprocess`'s preexec_fn, which is unsafe
in a multi-threaded server. Caveat of PR_SET_PDEATHSIG: it fires when the
*thread* that started the child ends, so `start` must be called from a thread
that lives as long as the build (the trigger's worker does); on systems other
than Linux there is no death signal, and `stop` is the only guard.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from monitoring.parent_death import die_with_parent

NICENESS = 19
DEATH_SIGNAL = signal.SIGKILL  # the server is gone: nobody waits for the build's result
YIELD_ENV = {
    "OMP_NUM_THREADS": "1",  # torch intra-op threads, OpenMP in numpy/scipy builds
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # Hugging Face tokenizers' own thread pool
    "RAYON_NUM_THREADS": "1",
}


def wrapped(command: Sequence[str], parent: int) -> list[str]:
    """The argv that runs `command` through the wrapper, for the server process `parent`."""
    return [sys.executable, "-m", "monitoring.buildproc", str(parent), "--", *command]


def start(
    command: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    """Start `command` niced, with one-thread pools and the death signal; stdout and stderr are piped
    (text). `env` is added to this process's environment. Call it from a thread that outlives the build
    (see the module doc)."""
    return subprocess.Popen(
        wrapped(command, os.getpid()),
        env={**os.environ, **YIELD_ENV, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str], grace_s: float = 10.0) -> int:
    """Terminate the build's process group: SIGTERM, then SIGKILL after `grace_s` seconds; returns the
    exit status (negative: the signal). Safe while another thread waits on the process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(timeout=grace_s)
    return process.wait()


def main(argv: Sequence[str]) -> int:
    """`PARENT_PID -- COMMAND...`: lower the priority, set the death signal, exec COMMAND (no return)."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m monitoring.buildproc PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), list(argv[2:])
    os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
    die_with_parent(DEATH_SIGNAL, parent)  # kills this process now if the server is already gone
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
