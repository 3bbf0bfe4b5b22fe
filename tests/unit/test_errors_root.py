"""Every exception class the project defines derives from `wwwserve.errors.WWWServeError` (issue 14).

The test imports every module of the wwwserve packages and looks at each exception class defined there, so a
new family rooted at `Exception`, `ValueError` or any other stdlib class fails here by name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import wwwserve
from wwwserve.errors import WWWServeError


def _all_modules() -> list[ModuleType]:
    modules = [wwwserve]
    for info in pkgutil.walk_packages(wwwserve.__path__, "wwwserve."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # importing it would run the program
        modules.append(importlib.import_module(info.name))
    return modules


def _exceptions_defined_in(module: ModuleType) -> list[type[BaseException]]:
    """Exception classes defined in `module`, at its top level or nested in its classes."""
    found: list[type[BaseException]] = []
    pending = [v for v in vars(module).values() if inspect.isclass(v) and v.__module__ == module.__name__]
    while pending:
        cls = pending.pop()
        if issubclass(cls, BaseException):
            found.append(cls)
        pending.extend(v for v in vars(cls).values() if inspect.isclass(v) and v.__module__ == module.__name__)
    return found


MODULES = _all_modules()
EXCEPTIONS = sorted({cls for m in MODULES for cls in _exceptions_defined_in(m)},
                    key=lambda c: f"{c.__module__}.{c.__qualname__}")


def test_the_walk_sees_every_layer() -> None:
    packages = {m.__name__.split(".")[1] for m in MODULES if m.__name__.count(".") >= 1}
    assert {"contracts", "ledger", "node", "judge", "devnet", "sim", "cli", "errors"} <= packages
    # the known families are found, so an empty list cannot pass by accident
    names = {c.__name__ for c in EXCEPTIONS}
    assert {"LedgerError", "NodeError", "DevnetError", "EnvelopeError", "SettingsError", "WorkloadError"} <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_exception_derives_from_the_root(cls: type[BaseException]) -> None:
    assert issubclass(cls, WWWServeError), (
        f"{cls.__module__}.{cls.__qualname__} derives from {[b.__name__ for b in cls.__mro__[1:]]}, not "
        "WWWServeError: root it there (keep a stdlib base beside it where callers catch one)")


def test_stdlib_twins_are_kept() -> None:
    """Callers that catch the stdlib class keep working after the re-rooting."""
    from wwwserve.devnet.anvil import DevnetError
    from wwwserve.ledger.errors import ChainUnreachableError, LedgerValueError, TransactionTimeoutError
    from wwwserve.ledger.safejson import UnsafeJSONError
    from wwwserve.node.settings import SettingsError
    from wwwserve.sim.workloads import WorkloadError

    assert issubclass(LedgerValueError, ValueError)
    assert issubclass(TransactionTimeoutError, TimeoutError)
    assert issubclass(ChainUnreachableError, ConnectionError)
    assert issubclass(DevnetError, RuntimeError)
    assert issubclass(UnsafeJSONError, ValueError)
    assert issubclass(SettingsError, ValueError)
    assert issubclass(WorkloadError, ValueError)
