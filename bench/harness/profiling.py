"""py-spy recordings of server processes during a measurement, and their top frames (`serving.py --profile`)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.common import LITELLM_VENV


def py_spy(progress: Callable[[str], None]) -> Path:
    """A py-spy executable: on PATH, or installed into bench/.venv-litellm on first use."""
    found = shutil.which("py-spy")
    if found:
        return Path(found)
    exe = LITELLM_VENV / "bin" / "py-spy"
    if not exe.exists():
        progress("installing py-spy into bench/.venv-litellm")
        if not LITELLM_VENV.exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
            (LITELLM_VENV / ".gitignore").write_text("*\n")
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return exe


def top_frames(collapsed: str, n: int = 12) -> list[tuple[str, float, float]]:
    """(frame, self share, inclusive share) of the n frames with most self time in py-spy raw output.

    Raw (collapsed) output has one `frame;frame;...;leaf count` line per distinct stack.
    """
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count
    if total == 0:
        return []
    ranked = sorted(self_counts.items(), key=lambda kv: -kv[1])[:n]
    return [(frame, c / total, incl_counts[frame] / total) for frame, c in ranked]


class Profiler:
    """py-spy recordings of server processes during a throughput phase (--profile)."""

    def __init__(self, exe: Path, workdir: Path, duration_s: float) -> None:
        self.exe, self.workdir, self.duration_s = exe, workdir, duration_s
        self.reports: dict[str, list[tuple[str, float, float]]] = {}

    @contextlib.contextmanager
    def record(self, name: str, pids: dict[str, int], idle: bool = False) -> Any:
        """Record every pid in `pids` (label -> pid) while the body runs.

        idle=False samples only running threads (where CPU goes); idle=True also waiting ones, which is
        where wall-clock time goes (the sequential-latency view).
        """
        running = []
        for label, pid in pids.items():
            out = self.workdir / f"profile-{name}-{label}.txt"
            cmd = [str(self.exe), "record", "--format", "raw", "--nonblocking", "-r", "250", "-o", str(out),
                   "-p", str(pid), *(["--idle"] if idle else [])]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running.append((label, proc, out))
        time.sleep(0.5)  # py-spy attaches
        try:
            yield
        finally:
            for label, proc, out in running:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if out.exists():
                    self.reports[f"{name}/{label}"] = top_frames(out.read_text())

    def format(self) -> str:
        """The top frames of every recording."""
        lines = []
        for key, frames in self.reports.items():
            lines.append(f"profile {key} (self %, inclusive %):")
            lines += [f"  {share * 100:5.1f}  {incl * 100:5.1f}  {frame}" for frame, share, incl in frames]
        return "\n".join(lines)
