"""Checking the index against the contract: every indexed balance beside the contract's own getter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from wwwserve.ledger.indexer.results import AccountInfo, BalanceMismatch

if TYPE_CHECKING:
    from wwwserve.ledger.indexer import Indexer


class HasContract(Protocol):
    """Anything carrying a web3 contract object (e.g. the ledger's chain client)."""

    @property
    def contract(self) -> Contract: ...


# (contract getter, AccountInfo field) of every per-account balance the index derives
ACCOUNT_FIELDS = (
    ("credit", "credit_wei"),
    ("pendingWithdrawal", "pending_withdrawal_wei"),
    ("withdrawableAt", "withdrawable_at"),
    ("activeStake", "active_stake_wei"),
    ("unbondingStake", "unbonding_stake_wei"),
    ("unbondingEnd", "unbonding_end"),
    ("unbondingBlock", "unbonding_block"),
    ("reserved", "bonded_wei"),
)


def views_contract(index: Indexer, source: Web3 | Contract | HasContract | None) -> Contract:
    """The contract object to read the index's deployment through: the index's own, or `source`'s."""
    if source is None:
        return index.contract
    if isinstance(source, Web3):
        return source.eth.contract(address=index.contract_address, abi=index.contract.abi)
    contract = source if isinstance(source, Contract) else getattr(source, "contract", None)
    if not isinstance(contract, Contract):
        raise TypeError(f"reconcile() needs a Web3, a Contract or an object with .contract, got {source!r}")
    if to_checksum_address(contract.address) != index.contract_address:
        raise ValueError(f"that client talks to {contract.address}, the index follows {index.contract_address}")
    return contract


def reconcile(index: Indexer, views: Contract, extra_addresses: Sequence[str] = ()) -> list[BalanceMismatch]:
    """Every value of `index` that differs from what `views` (the contract) reports now (see `Indexer.reconcile`)."""
    mismatches: list[BalanceMismatch] = []
    accounts = {a.address: a for a in index.accounts()}
    for extra in extra_addresses:
        extra_address: str = to_checksum_address(extra)
        accounts.setdefault(extra_address, AccountInfo(extra_address, 0, 0, 0, 0, 0, 0, 0, 0))
    for address, acct in sorted(accounts.items()):
        for getter, attr in ACCOUNT_FIELDS:
            on_chain = int(views.functions[getter](address).call())
            indexed: int = getattr(acct, attr)
            if on_chain != indexed:
                mismatches.append(BalanceMismatch(address, getter, indexed, on_chain))
    for (origin, executor), total in sorted(index.claimed_totals().items()):
        on_chain = int(views.functions.claimed(origin, executor).call())
        if on_chain != total:
            mismatches.append(BalanceMismatch(origin, f"claimed[{executor}]", total, on_chain))
    for node in index.nodes(active_only=False):
        entry = views.functions.nodes(node.address).call()
        # Node struct order: pubkey, endpoint, models, metadata, active, leaf
        if bool(entry[4]) != node.active:
            mismatches.append(BalanceMismatch(node.address, "nodes.active", int(node.active), int(entry[4])))
        if int(entry[5]) != node.leaf:
            mismatches.append(BalanceMismatch(node.address, "nodes.leaf", node.leaf, int(entry[5])))
        held = bool(views.functions.registeredOnce(node.address).call())
        if held != node.slot_held:
            mismatches.append(BalanceMismatch(node.address, "registeredOnce", int(node.slot_held), int(held)))
    on_chain_reserve = int(views.functions.reserve().call())
    if on_chain_reserve != index.reserve():
        mismatches.append(BalanceMismatch(index.contract_address, "reserve", index.reserve(), on_chain_reserve))
    return mismatches
