"""The CLI package without a chain: the entry points, --version, and the one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from wwwserve import __version__
from wwwserve.cli import app


def test_version_prints_and_exits_zero() -> None:
    # It was parsed after click had asked for a command: `wwwserve --version` printed "Missing command".
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wwwserve {__version__}"


@pytest.mark.component
def test_python_dash_m_runs_the_same_program() -> None:
    proc = subprocess.run([sys.executable, "-m", "wwwserve.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    for group in ("up", "verify", "devnet", "wallet", "node", "credit", "stake", "duel", "sim"):
        assert f"  {group} " in proc.stdout


def test_a_typed_error_is_one_line_printed_verbatim() -> None:
    # a bad amount never reaches the chain; the message keeps its brackets (rich would read [red] as markup)
    result = CliRunner().invoke(app, ["-w", "nobody", "credit", "deposit", "[red]1eth"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "[red]1eth" in lines[0], result.output
