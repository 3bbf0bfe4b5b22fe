"""A node's ed25519 identity key: it signs every result the node produces.

The 32-byte public key is registered on-chain; the seed stays in `<WWWSERVE_HOME>/identities/<name>.ed25519`
(hex, mode 0600). The node id on-chain is the operator wallet's address, not this key. It lives in the
ledger layer, beside the wallets, because whoever registers a node needs it (the CLI, the devnet's demo
nodes) as well as the node that signs with it.
"""

from __future__ import annotations

import os
from pathlib import Path

import nacl.signing

from wwwserve.ledger.home import wwwserve_home


def identity_path(name: str, home: Path | None = None) -> Path:
    """Where the identity key called `name` is kept."""
    return (home or wwwserve_home()) / "identities" / f"{name}.ed25519"


def load_or_create_identity(name: str, home: Path | None = None) -> nacl.signing.SigningKey:
    """Load the node's signing key, creating it (0600) on first use."""
    path = identity_path(name, home)
    if path.exists():
        return nacl.signing.SigningKey(bytes.fromhex(path.read_text().strip()))
    key = nacl.signing.SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.encode().hex() + "\n")
    return key


def public_key_bytes(key: nacl.signing.SigningKey) -> bytes:
    """The 32 raw bytes registered on-chain."""
    return bytes(key.verify_key)
