"""Running a document's command blocks as written: the machinery test_joining_docs.py and test_readme_blocks.py
share.

A block is taken from the Markdown file itself, split into command lines, and each line runs in bash in a
`Machine`: one shell with its own $WWWSERVE_HOME and a directory that stands for the user's checkout (its
`.venv` is this checkout's venv), whose exports carry over from line to line. What a test changes in a line
(an example address, a port) is a declared placeholder, filled in the open; commands that run until Ctrl-C
start in the background and get Ctrl-C (SIGINT) at the end.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from wwwserve.cli import app

ROOT = Path(__file__).resolve().parents[2]
GLOBAL_OPTIONS_WITH_VALUE = ("-w", "--wallet", "--rpc-url", "--contract", "--home")  # `wwwserve -w NAME ...`
READY_DEADLINE_S = 240.0  # a hung process fails the test instead of hanging it; not a performance bound


def cli_span_problem(words: Sequence[str]) -> str | None:
    """What is wrong with a `wwwserve ...` command named in running text, given its words after `wwwserve`:
    None when they name a real command, with options it has; else the problem, in words."""
    root: Any = typer.main.get_command(app)  # a click Group (typer's own copy of click: typed loosely here)
    rest = list(words)
    while rest and rest[0] in GLOBAL_OPTIONS_WITH_VALUE:
        rest = rest[2:]
    command, path = root, [root]
    while rest and rest[0] in getattr(command, "commands", {}):
        command = command.commands[rest.pop(0)]
        path.append(command)
    if command is root:
        return "no such command"
    known = {opt for cmd in path for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
    named = {word.split("=")[0] for word in rest if word.startswith("-")}
    if not named <= known:
        where = " ".join(str(cmd.name) for cmd in path[1:])
        return f"{sorted(named - known)} are not options of `wwwserve {where}`"
    return None


@dataclass(frozen=True)
class Fence:
    """One fenced code block of a Markdown text: its info string (`bash`, or '' when unlabelled), its text
    (dedented: some sit inside list items) and the line its opening fence is on."""

    info: str
    text: str
    line: int


def fenced_blocks(text: str) -> list[Fence]:
    """Every fenced (```) code block of a Markdown text, in order."""
    fences = []
    for match in re.finditer(r"^([ \t]*)```([^\n`]*)\n(.*?)^[ \t]*```[ \t]*$", text, flags=re.S | re.M):
        line = text.count("\n", 0, match.start()) + 1
        fences.append(Fence(match.group(2).strip(), textwrap.dedent(match.group(3)), line))
    return fences


def bash_blocks(text: str) -> list[str]:
    """The ```bash blocks of a Markdown text, in order, dedented (some sit inside list items)."""
    return [textwrap.dedent(b) for b in re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", text, flags=re.S | re.M)]


def command_lines(block: str) -> list[str]:
    """The block's commands: continuation lines joined, blank lines dropped."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def free_port(span: int = 1) -> int:
    """A port p with p .. p+span-1 all free now (span > 1: for `wwwserve up`'s consecutive node ports)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + span >= 65000:
            continue
        try:
            for p in range(port, port + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free ports")


def http_status(url: str) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_until(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
               deadline_s: float = READY_DEADLINE_S) -> None:
    """Wait for an event; the process dying or the deadline passing fails with its log."""
    deadline = time.monotonic() + deadline_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited {proc.returncode}" if proc.poll() is not None else "still not ready"
            pytest.fail(f"{what}: {state}\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.3)


class Machine:
    """One shell on one machine: its environment (exports and `source` carry over from line to line), its
    $WWWSERVE_HOME, its background processes."""

    def __init__(self, name: str, home: Path, placeholders: list[tuple[str, Callable[[], str]]]) -> None:
        self.name = name
        self.home = home
        # The shell's directory stands for the machine's checkout: the venv is this checkout's, so the docs'
        # `source .venv/bin/activate` and `.venv/bin/wwwserve` work there, and files a command writes
        # (response.json) stay in tmp.
        self.cwd = home.parent / "checkout"
        self.cwd.mkdir()
        (self.cwd / ".venv").symlink_to(ROOT / ".venv")
        self.placeholders = placeholders
        venv_bin = str(Path(sys.executable).parent)
        path = [p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p) != Path(venv_bin)]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("WWWSERVE_", "VIRTUAL_ENV"))}
        self.env.update(PATH=os.pathsep.join(path), WWWSERVE_HOME=str(home), COLUMNS="250", NO_COLOR="1")
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.outputs: list[str] = []  # each command's stdout and stderr together, in order
        self.stdout = ""  # the last command's stdout alone (curl's progress meter goes to stderr)

    def fill(self, line: str) -> str:
        """The command with its placeholders filled; its trailing comment (`  # ...`) dropped, as bash would."""
        line = line.partition(" # ")[0].rstrip()
        for placeholder, value in self.placeholders:
            if placeholder in line:  # read only when used: an address exists once its command printed it
                line = line.replace(placeholder, value())
        return line

    def run(self, line: str, timeout_s: float = READY_DEADLINE_S) -> str:
        """Run one command line as written (placeholders filled) in this shell; it must succeed."""
        command = self.fill(line)
        env_file = self.home.parent / f"{self.name}.env"
        script = f"set -e\n{command}\nenv -0 > {shlex.quote(str(env_file))}\n"
        done = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)
        out = done.stdout + done.stderr
        assert done.returncode == 0, f"machine {self.name}: `{command}` -> {done.returncode}\n{out}"
        self.env = dict(entry.split("=", 1) for entry in env_file.read_text().split("\0") if "=" in entry)
        self.outputs.append(out)
        self.stdout = done.stdout
        return out

    def start(self, line: str, extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        """Start a command that runs until Ctrl-C in the background, with `extra` arguments appended."""
        log = self.home.parent / f"{self.name}-{len(self.background)}.log"
        command = f"{self.fill(line)} {extra}"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.cwd, env=self.env, stdout=out,
                                    stdin=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append((proc, log))
        return proc, log

    def ctrl_c(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        """What Ctrl-C does: SIGINT to the process group; it must stop cleanly."""
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"machine {self.name}: Ctrl-C did not stop it\n{log.read_text(errors='replace')[-3000:]}")
        assert code in (0, 130, -signal.SIGINT), f"exit {code}\n{log.read_text(errors='replace')[-3000:]}"

    def kill_all(self) -> None:
        """SIGKILL every background process still running (a test's cleanup, whatever failed)."""
        for proc, _ in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
