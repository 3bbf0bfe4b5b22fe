"""Load a script of bench/ as a module, for the tests of its pieces (bench/ is a folder of scripts, not a
package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_script(relative: str, name: str) -> ModuleType:
    """bench/`relative` run as the module `name`, registered in sys.modules first (dataclasses look their
    module up there while a class is built)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
