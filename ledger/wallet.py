"""Wallets: encrypted Ethereum keystores (eth-account's v3 JSON) under `$WWWSERVE_HOME/keystores/`.

A wallet is `<home>/keystores/<name>.json`, readable by its owner only (0600, folder 0700), never
overwritten. The password comes from the argument or `WWWSERVE_PASSWORD`; prompting is the CLI's job.
Keys are scrypt-encrypted with eth-account's defaults; `Kdf` allows cheaper settings for tests only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from wwwserve.ledger.errors import (
    InvalidPrivateKeyError,
    InvalidWalletNameError,
    KeystoreCorruptError,
    KeystoreNotFoundError,
    MissingPasswordError,
    WalletExistsError,
    WrongPasswordError,
)
from wwwserve.ledger.home import wwwserve_home

__all__ = [
    "DEFAULT_KDF",
    "PASSWORD_ENV",
    "TEST_KDF",
    "Kdf",
    "WalletInfo",
    "create_wallet",
    "import_wallet",
    "keystore_dir",
    "list_wallets",
    "load_wallet",
    "resolve_password",
    "wallet_info",
    "wallet_path",
    "wwwserve_home",
]

PASSWORD_ENV = "WWWSERVE_PASSWORD"
KEYSTORE_DIRNAME = "keystores"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class Kdf:
    """Key-derivation settings for new keystores."""

    name: Literal["scrypt", "pbkdf2"] = "scrypt"
    # scrypt: N (power of two); pbkdf2: iterations. None = eth-account's default (scrypt N=2**18).
    iterations: int | None = None


DEFAULT_KDF = Kdf()
# Cheap enough for unit tests (milliseconds); never use it for real keys.
TEST_KDF = Kdf("scrypt", 2**4)


@dataclass(frozen=True)
class WalletInfo:
    """A wallet on disk (read without decrypting it)."""

    name: str
    address: str
    path: Path


def keystore_dir(home: Path | None = None) -> Path:
    return (home or wwwserve_home()) / KEYSTORE_DIRNAME


def wallet_path(name: str, home: Path | None = None) -> Path:
    """Where wallet `name` lives; the name is checked so it can never escape the keystore folder."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidWalletNameError(
            f"invalid wallet name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return keystore_dir(home) / f"{name}.json"


def resolve_password(password: str | None) -> str:
    """The given password, else `$WWWSERVE_PASSWORD`; MissingPasswordError if neither is set."""
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise MissingPasswordError(f"no wallet password: pass one or set {PASSWORD_ENV}")
    return password


def _private_key_bytes(private_key: str | bytes) -> bytes:
    if isinstance(private_key, str):
        text = private_key.strip()
        text = text[2:] if text[:2].lower() == "0x" else text
        if len(text) != 64:
            raise InvalidPrivateKeyError("private key must be 32 bytes (64 hex characters)")
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise InvalidPrivateKeyError("private key is not valid hex") from None
    elif isinstance(private_key, bytes | bytearray):
        key = bytes(private_key)
        if len(key) != 32:
            raise InvalidPrivateKeyError("private key must be 32 bytes")
    else:
        raise InvalidPrivateKeyError(f"private key must be hex text or bytes, got {type(private_key).__name__}")
    if not 0 < int.from_bytes(key, "big") < _SECP256K1_N:
        raise InvalidPrivateKeyError("private key is outside the secp256k1 range")
    return key


def _write_new(path: Path, data: dict[str, Any]) -> None:
    """Write `path` with mode 0600, atomically, failing if it exists (no check-then-write race)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if a wallet with this name appeared meanwhile
        except FileExistsError:
            raise WalletExistsError(f"wallet {path.stem!r} already exists at {path}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _save(name: str, key: bytes, password: str | None, home: Path | None, kdf: Kdf) -> WalletInfo:
    path = wallet_path(name, home)
    if path.exists():
        raise WalletExistsError(f"wallet {name!r} already exists at {path}")
    secret = resolve_password(password)
    keystore = Account.encrypt(key, secret, kdf=kdf.name, iterations=kdf.iterations)
    _write_new(path, keystore)
    return WalletInfo(name=name, address=str(Account.from_key(key).address), path=path)


def create_wallet(
    name: str, password: str | None = None, *, home: Path | None = None, kdf: Kdf = DEFAULT_KDF
) -> WalletInfo:
    """Generate a new key and store it encrypted as wallet `name`."""
    wallet_path(name, home)  # validate the name before spending time on key generation
    return _save(name, bytes(Account.create().key), password, home, kdf)


def import_wallet(
    name: str,
    private_key: str | bytes,
    password: str | None = None,
    *,
    home: Path | None = None,
    kdf: Kdf = DEFAULT_KDF,
) -> WalletInfo:
    """Store an existing private key (hex, with or without 0x, or 32 bytes) encrypted as wallet `name`."""
    return _save(name, _private_key_bytes(private_key), password, home, kdf)


def _read_keystore(name: str, home: Path | None) -> tuple[Path, dict[str, Any]]:
    path = wallet_path(name, home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeystoreNotFoundError(f"no wallet named {name!r} (looked for {path})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeystoreCorruptError(f"wallet file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or ("crypto" not in data and "Crypto" not in data):
        raise KeystoreCorruptError(f"wallet file {path} is not an encrypted keystore")
    return path, data


def load_wallet(name: str, password: str | None = None, *, home: Path | None = None) -> LocalAccount:
    """Decrypt wallet `name` into a LocalAccount (the key stays in this process)."""
    path, data = _read_keystore(name, home)
    secret = resolve_password(password)
    try:
        key = Account.decrypt(data, secret)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPasswordError(f"wrong password for wallet {name!r}") from None
        raise KeystoreCorruptError(f"wallet file {path} cannot be decrypted: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise KeystoreCorruptError(f"wallet file {path} is missing field {exc}") from None
    account: LocalAccount = Account.from_key(key)
    return account


def wallet_info(name: str, home: Path | None = None) -> WalletInfo:
    """Name, address and path of wallet `name`, without decrypting it."""
    path, data = _read_keystore(name, home)
    address = data.get("address")
    if not isinstance(address, str):
        raise KeystoreCorruptError(f"wallet file {path} has no address")
    try:
        checksummed = to_checksum_address(address if address.startswith("0x") else "0x" + address)
    except ValueError:
        raise KeystoreCorruptError(f"wallet file {path} has an invalid address {address!r}") from None
    return WalletInfo(name=name, address=str(checksummed), path=path)


def list_wallets(home: Path | None = None) -> list[WalletInfo]:
    """Every readable wallet, sorted by name (unreadable files are skipped)."""
    folder = keystore_dir(home)
    if not folder.is_dir():
        return []
    out: list[WalletInfo] = []
    for path in sorted(folder.glob("*.json")):
        if not _NAME_RE.match(path.stem):
            continue
        try:
            out.append(wallet_info(path.stem, home))
        except (KeystoreCorruptError, KeystoreNotFoundError):
            continue
    return out
