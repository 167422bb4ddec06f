"""Load for ``--busy N``: N processes, each a plain spinning loop that keeps one core busy.

As a build or a browser tab would on a user's laptop: ordinary priority, not pinned to a core.
Each spinner is bounded in time: it stops by itself after ``limit_s`` seconds, or as soon as the
process that started it is gone, so a killed benchmark leaves nothing spinning. The harness stops
them (by their process ids) when its set is done. ``python -m benchmarks.busy SECONDS`` is one
spinner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # (not from .common: a spinner imports nothing but the stdlib)
DEFAULT_LIMIT_S = 6 * 3600.0


def spin(limit_s: float, parent: int) -> None:
    """Spin until ``limit_s`` seconds have passed or ``parent`` is no longer this process's parent."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and os.getppid() == parent:
        for _ in range(200_000):  # a few ms of pure user-space work between checks
            pass


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc (None if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Spinners:
    """``with Spinners(n):`` keeps ``n`` processes spinning inside the block (none for n = 0)."""

    def __init__(self, n: int, limit_s: float = DEFAULT_LIMIT_S):
        self.n, self.limit_s = n, limit_s
        self.procs: list[subprocess.Popen] = []

    def start(self) -> Spinners:
        for _ in range(self.n):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.busy", repr(self.limit_s), str(os.getpid())],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
            )
        time.sleep(0.3 if self.n else 0)  # past the interpreter's start-up: spinning from here on
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.procs)

    def cpu(self) -> float:
        """CPU seconds used so far by the spinners together."""
        return sum(cpu_seconds(pid) or 0.0 for pid in self.pids)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def __enter__(self) -> Spinners:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    limit = float(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_LIMIT_S
    parent = int(sys.argv[2]) if len(sys.argv) > 2 else os.getppid()
    spin(limit, parent)
