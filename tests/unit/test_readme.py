"""The README's two commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    test_cmd = next(b for b in _bash_blocks(readme) if "pytest" in b)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()


def test_readme_main_command_uses_wwwserve_up() -> None:
    readme = (ROOT / "README.md").read_text()
    main_cmd = _bash_blocks(readme)[0]
    assert main_cmd.endswith("wwwserve up")
    # `wwwserve up` serves SmolLM2 on CPU by default, which needs the `local` extra.
    assert "pip install -e '.[local]'" in main_cmd
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"torch==2.13.0", "transformers<5.20", "gguf", "accelerate"} <= set(extras["local"])


def test_console_script_points_at_the_cli() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"wwwserve": "wwwserve.cli:main"}
