"""The one root of every exception the project raises.

Each layer has its own family below this root, named `<Domain><Problem>Error`: `LedgerError`
(`ledger.errors`: chain access, contract reverts, wallets), `DevnetError` (`devnet.anvil`), `NodeError`
(`node.errors`: everything a user of the API can be answered with) beside the node's own families
(envelopes, signatures, settings, peers, backends), `EvidenceError` (`judge.evidence`), `WorkloadError`
(`sim.workloads`), and so on. Where a stdlib exception fits, a class derives from it as well, web3.py
style (`class LedgerValueError(LedgerError, ValueError)`, `class TransactionTimeoutError(LedgerError,
TimeoutError)`), so a caller that catches `ValueError` or `TimeoutError` keeps working.

`except WWWServeError` therefore catches what the project raised on purpose and nothing else: the CLI
turns exactly those into one `error: ...` line, and anything else is a bug with a traceback.
tests/unit/test_errors_root.py imports every module and fails on an exception class that does not
derive from this root.

This module imports nothing from the project, so every layer (contracts and ledger included) can use it.
"""

from __future__ import annotations

__all__ = ["WWWServeError"]


class WWWServeError(Exception):
    """Root of every exception raised by wwwserve."""
