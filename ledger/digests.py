"""Off-chain mirrors of the contract's hashes, byte for byte: fee vouchers (EIP-712, domain "WWWServe"
version "1") and judges' vote commitments. Work attestations and duel ids live in `ledger.work`.

A node signs and checks vouchers without a chain call, a judge commits to a vote it reveals later; the
contract's own getters (`voucherDigest`, `voteCommitment`) agree with these, and the unit tests check that.
"""

from __future__ import annotations

from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from wwwserve.ledger import arguments as arg
from wwwserve.ledger.errors import LedgerError, LedgerValueError

EIP712_NAME = "WWWServe"
EIP712_VERSION = "1"


def voucher_typed_data(
    chain_id: int, contract: str, origin: str, executor: str, cumulative_wei: int
) -> dict[str, Any]:
    """The EIP-712 typed data of a fee voucher, as WWWServe.voucherDigest hashes it."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Voucher": [
                {"name": "origin", "type": "address"},
                {"name": "executor", "type": "address"},
                {"name": "cumulativeAmount", "type": "uint256"},
            ],
        },
        "primaryType": "Voucher",
        "domain": {
            "name": EIP712_NAME,
            "version": EIP712_VERSION,
            "chainId": arg.uint(chain_id, "chain_id"),
            "verifyingContract": arg.checksum_address(contract, "contract"),
        },
        "message": {
            "origin": arg.checksum_address(origin, "origin"),
            "executor": arg.checksum_address(executor, "executor"),
            "cumulativeAmount": arg.wei(cumulative_wei, "cumulative_wei"),
        },
    }


def _voucher_message(
    chain_id: int, contract: str, origin: str, executor: str, cumulative_wei: int
) -> SignableMessage:
    return encode_typed_data(full_message=voucher_typed_data(chain_id, contract, origin, executor, cumulative_wei))


def voucher_digest(chain_id: int, contract: str, origin: str, executor: str, cumulative_wei: int) -> bytes:
    """The 32-byte EIP-712 digest an origin signs (equals WWWServe.voucherDigest)."""
    message = _voucher_message(chain_id, contract, origin, executor, cumulative_wei)
    return keccak(b"\x19" + message.version + message.header + message.body)


def sign_voucher_offline(
    account: LocalAccount, chain_id: int, contract: str, executor: str, cumulative_wei: int
) -> bytes:
    """`account` (the origin) signs a voucher owing `executor` `cumulative_wei` in total: 65 bytes r||s||v."""
    message = _voucher_message(chain_id, contract, account.address, executor, cumulative_wei)
    return bytes(account.sign_message(message).signature)


def recover_voucher_signer(
    chain_id: int, contract: str, origin: str, executor: str, cumulative_wei: int, signature: bytes
) -> str:
    """The address that signed a voucher (the executor checks it equals `origin` before serving)."""
    message = _voucher_message(chain_id, contract, origin, executor, cumulative_wei)
    try:
        return str(Account.recover_message(message, signature=arg.signature(signature)))
    except LedgerError:
        raise
    except Exception as exc:
        raise LedgerValueError(f"voucher signature cannot be recovered: {exc}") from exc


def vote_commitment(
    chain_id: int, contract: str, duel_id: int, round: int, judge: str, vote: int, salt: bytes | str
) -> bytes:
    """keccak256(abi_encode(chainId, contract, duelId, round, judge, uint8 vote, bytes32 salt)), as
    WWWServe.voteCommitment: bound to the chain, the contract, the duel, the round and the judge, so a
    commitment can be replayed nowhere else (the contract keeps its first 16 bytes)."""
    return keccak(
        abi_encode(
            ["uint256", "address", "uint256", "uint256", "address", "uint8", "bytes32"],
            [
                arg.uint(chain_id, "chain_id"),
                arg.checksum_address(contract, "contract"),
                arg.duel_id(duel_id),
                arg.round_number(round),
                arg.checksum_address(judge, "judge"),
                int(arg.vote(vote)),
                arg.bytes32(salt, "salt"),
            ],
        )
    )
