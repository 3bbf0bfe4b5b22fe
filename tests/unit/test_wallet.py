"""ledger.wallet: encrypted keystores under $WWWSERVE_HOME/keystores, and their errors."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from wwwserve.ledger.errors import (
    InvalidPrivateKeyError,
    InvalidWalletNameError,
    KeystoreCorruptError,
    KeystoreNotFoundError,
    MissingPasswordError,
    WalletError,
    WalletExistsError,
    WrongPasswordError,
)
from wwwserve.ledger.wallet import (
    PASSWORD_ENV,
    TEST_KDF,
    Kdf,
    create_wallet,
    import_wallet,
    keystore_dir,
    list_wallets,
    load_wallet,
    wallet_info,
    wwwserve_home,
)

ANVIL_KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_ADDR0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_home_comes_from_env(wwwserve_home: Path) -> None:
    # (the `wwwserve_home` fixture sets WWWSERVE_HOME; the function reads it)
    assert keystore_dir() == wwwserve_home / "keystores"


def test_home_defaults_to_dot_wwwserve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WWWSERVE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wwwserve_home() == tmp_path / ".wwwserve"


def test_create_load_round_trip(wwwserve_home: Path) -> None:
    info = create_wallet("alice", "s3cret", kdf=TEST_KDF)
    assert info.path == wwwserve_home / "keystores" / "alice.json"
    account = load_wallet("alice", "s3cret")
    assert account.address == info.address
    # the file is an eth-account v3 keystore, owner-only, in an owner-only folder
    data = json.loads(info.path.read_text())
    assert data["version"] == 3 and "crypto" in data
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(info.path.parent.stat().st_mode) == 0o700
    # no temporary files left behind
    assert [p.name for p in info.path.parent.iterdir()] == ["alice.json"]


def test_import_known_key(wwwserve_home: Path) -> None:
    info = import_wallet("dev0", ANVIL_KEY0, "pw", kdf=TEST_KDF)
    assert info.address == ANVIL_ADDR0
    assert load_wallet("dev0", "pw").key.hex() == ANVIL_KEY0[2:]
    # without 0x, and as bytes
    assert import_wallet("dev0b", ANVIL_KEY0[2:], "pw", kdf=TEST_KDF).address == ANVIL_ADDR0
    assert import_wallet("dev0c", bytes.fromhex(ANVIL_KEY0[2:]), "pw", kdf=TEST_KDF).address == ANVIL_ADDR0


def test_pbkdf2_kdf(wwwserve_home: Path) -> None:
    info = import_wallet("p", ANVIL_KEY0, "pw", kdf=Kdf("pbkdf2", 1000))
    assert json.loads(info.path.read_text())["crypto"]["kdf"] == "pbkdf2"
    assert load_wallet("p", "pw").address == ANVIL_ADDR0


def test_default_kdf_is_scrypt_with_eth_account_strength(wwwserve_home: Path) -> None:
    info = create_wallet("strong", "pw")
    params = json.loads(info.path.read_text())["crypto"]["kdfparams"]
    assert params["n"] >= 2**18


def test_password_from_env(wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    info = create_wallet("envy", kdf=TEST_KDF)
    assert load_wallet("envy").address == info.address
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(MissingPasswordError, match=PASSWORD_ENV):
        load_wallet("envy")
    with pytest.raises(MissingPasswordError):
        create_wallet("other", "", kdf=TEST_KDF)


def test_wrong_password(wwwserve_home: Path) -> None:
    import_wallet("w", ANVIL_KEY0, "right", kdf=TEST_KDF)
    with pytest.raises(WrongPasswordError, match="wrong password for wallet 'w'") as info:
        load_wallet("w", "wrong")
    assert isinstance(info.value, WalletError)


def test_missing_keystore(wwwserve_home: Path) -> None:
    with pytest.raises(KeystoreNotFoundError, match="no wallet named 'ghost'") as info:
        load_wallet("ghost", "pw")
    assert isinstance(info.value, FileNotFoundError)


def test_name_already_exists_is_never_overwritten(wwwserve_home: Path) -> None:
    first = import_wallet("dup", ANVIL_KEY0, "pw", kdf=TEST_KDF)
    before = first.path.read_bytes()
    with pytest.raises(WalletExistsError, match="already exists"):
        create_wallet("dup", "pw", kdf=TEST_KDF)
    assert first.path.read_bytes() == before


@pytest.mark.parametrize(
    "key",
    [
        "0x1234",
        "zz" * 32,
        "0x" + "00" * 32,  # zero is not a valid secp256k1 key
        "0x" + "ff" * 32,  # above the curve order
        b"\x01" * 31,
    ],
)
def test_invalid_private_key(wwwserve_home: Path, key: str | bytes) -> None:
    with pytest.raises(InvalidPrivateKeyError):
        import_wallet("bad", key, "pw", kdf=TEST_KDF)
    assert not (wwwserve_home / "keystores" / "bad.json").exists()


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_invalid_wallet_names(wwwserve_home: Path, name: str) -> None:
    with pytest.raises(InvalidWalletNameError):
        create_wallet(name, "pw", kdf=TEST_KDF)


def test_list_wallets_and_info(wwwserve_home: Path) -> None:
    assert list_wallets() == []
    b = create_wallet("bob", "pw", kdf=TEST_KDF)
    a = import_wallet("alice", ANVIL_KEY0, "pw", kdf=TEST_KDF)
    # junk in the folder is skipped, not fatal
    (wwwserve_home / "keystores" / "junk.json").write_text("{not json")
    listed = list_wallets()
    assert [(w.name, w.address) for w in listed] == [("alice", a.address), ("bob", b.address)]
    assert wallet_info("bob").address == Account.from_key(load_wallet("bob", "pw").key).address
    with pytest.raises(KeystoreCorruptError):
        load_wallet("junk", "pw")


def test_explicit_home_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WWWSERVE_HOME", raising=False)
    home = tmp_path / "elsewhere"
    info = import_wallet("h", ANVIL_KEY0, "pw", home=home, kdf=TEST_KDF)
    assert info.path == home / "keystores" / "h.json"
    assert load_wallet("h", "pw", home=home).address == ANVIL_ADDR0
    assert [w.name for w in list_wallets(home)] == ["h"]
