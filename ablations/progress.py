"""What the runner shows while jobs run: one line per event (a job started, done, failed, skipped) and, for the local
pool, one live line per running job (the last line of its log, the time since it started and the time left)."""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

FRACTION = re.compile(r"(\d+)/(\d+)")


def last_line(log: Path) -> str:
    """The last line of a job's log, without its time stamp ("" while there is none)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].split("] ", 1)[-1] if lines else ""


def time_left(line: str, elapsed: float) -> str:
    """'~Ns left' from the first 'a/b' progress fraction of a log line and the time since the job started."""
    m = FRACTION.search(line)
    if not m or int(m[1]) == 0 or int(m[1]) > int(m[2]):
        return ""
    a, b = int(m[1]), int(m[2])
    return f", ~{elapsed * (b - a) / a:.0f}s left"


class Progress:
    """Event lines: jobs done / failed so far, the time since the start, and what happened."""

    def __init__(self, total: int, already: int) -> None:
        self.total, self.done, self.failed = total, already, 0
        self.t0 = time.time()

    def show(self, msg: str) -> None:
        elapsed = time.time() - self.t0
        print(f"[{self.done}/{self.total} done, {self.failed} failed, {elapsed:6.0f}s] {msg}", flush=True)


class Board(Progress):
    """Progress with one live line per running job. In a terminal the block of live lines is redrawn in place every
    ``every`` seconds (event lines scroll above it); otherwise a job's line is printed only when it changed, every
    5 x ``every`` seconds."""

    def __init__(self, total: int, already: int, every: float = 2.0) -> None:
        super().__init__(total, already)
        self.tty = sys.stdout.isatty()
        self.every = every if self.tty else 5 * every
        self.running: dict[str, tuple[Path, float]] = {}  # job name -> (its log, its start)
        self.note = ""  # a line of its own under the jobs, e.g. who the runner waits for
        self.drawn = 0  # live lines on the screen now
        self.printed: dict[str, str] = {}  # without a terminal: the line last printed per job
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def add(self, name: str, log: Path) -> None:
        with self.lock:
            self.running[name] = (log, time.time())

    def remove(self, name: str) -> None:
        with self.lock:
            self.running.pop(name, None)
            self.printed.pop(name, None)

    def show(self, msg: str) -> None:
        with self.lock:
            self._clear()
            super().show(msg)
            self._draw()

    def close(self) -> None:
        """Stop redrawing and take the live lines off the screen."""
        self.stop.set()
        self.thread.join()
        with self.lock:
            self._clear()

    def _lines(self) -> dict[str, tuple[str, str]]:
        """Per running job (and the note, under ""): its log's last line, and the live line shown."""
        lines = {}
        for name, (log, t0) in self.running.items():
            line, elapsed = last_line(log), time.time() - t0
            lines[name] = (line, f"  {name}: {line or 'starting'} ({elapsed:.0f}s{time_left(line, elapsed)})")
        if self.note:
            lines[""] = (self.note, f"  {self.note}")
        return lines

    def _clear(self) -> None:
        if self.tty and self.drawn:
            print(f"\x1b[{self.drawn}F\x1b[J", end="", flush=True)  # up to the block's first line, clear below
        self.drawn = 0

    def _draw(self) -> None:
        if not self.tty:
            return
        width = shutil.get_terminal_size().columns - 1  # a wrapped line would break the count of lines to redraw
        lines = [text[:width] for _, text in self._lines().values()]
        if lines:
            print("\n".join(lines), flush=True)
        self.drawn = len(lines)

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            with self.lock:
                if self.tty:
                    self._clear()
                    self._draw()
                    continue
                for name, (line, text) in self._lines().items():  # only what changed (not the time alone)
                    if line and self.printed.get(name) != line:
                        print(text, flush=True)
                        self.printed[name] = line
