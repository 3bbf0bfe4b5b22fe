"""The Ledger manager's reads: the registry view and what routing asks of it (node.managers.ledger).

`refresh()` syncs the indexer on the sync thread and rebuilds the whole `ChainView` (or keeps it when no
block came); `peers`, `pubkey_of`, `contact`, `stake_wei`, `credit_wei`, `recent_block_hash`, ... answer
from that view, never over RPC.
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from wwwserve.ledger.chain import is_transient
from wwwserve.ledger.db import VoucherClaimRow
from wwwserve.ledger.errors import ChainUnreachableError, LedgerError
from wwwserve.node.managers.ledger.base import ChainView, LedgerBase, PeerRecord, checksum_or_none
from wwwserve.node.routing import Peer, routable_stake_wei

__all__ = ["LedgerReads"]


class LedgerReads(LedgerBase):
    """The registry view and the queries answered from it (see the module docstring)."""

    async def refresh(self) -> None:
        """Sync the index now (in a thread) and replace the in-memory view."""
        async with self._refresh_lock:
            self._view = await self._in_pool(self._sync_pool, self._sync_and_build)

    def _sync_and_build(self) -> ChainView:
        try:
            return self._build_view()
        except LedgerError:
            raise
        except Exception as exc:
            # The indexer lets transport errors through raw; callers see one typed error for an outage.
            if is_transient(exc):
                raise ChainUnreachableError(self.rpc_url, f"{type(exc).__name__}: {exc}") from exc
            raise

    def _build_view(self) -> ChainView:
        indexer = self._require_indexer()
        indexer.sync()
        cursor = indexer.cursor()
        view = self._view
        if (
            cursor is not None
            and cursor.block_number == view.block_number
            and bytes.fromhex(cursor.block_hash.removeprefix("0x")) == view.block_hash
        ):
            return view  # no new block since the last view: nothing to rebuild (the GIL is shared with serving)
        peers: dict[str, PeerRecord] = {}
        pubkeys: dict[str, bytes] = {}
        endpoints: dict[str, str] = {}
        funds: dict[str, int] = {}
        stakes = {entry.address: entry for entry in indexer.stake_table()}
        for node in indexer.nodes(active_only=False):
            pubkey = bytes.fromhex(node.pubkey.removeprefix("0x"))
            pubkeys[node.address] = pubkey
            endpoints[node.address] = node.endpoint.rstrip("/")
            entry = stakes.get(node.address)
            if entry is not None:
                funds[node.address] = entry.credit_wei + entry.pending_withdrawal_wei
            if node.active:
                peers[node.address] = PeerRecord(
                    address=node.address,
                    pubkey=pubkey,
                    endpoint=node.endpoint.rstrip("/"),
                    models=frozenset(node.models),
                    stake_wei=routable_stake_wei(entry.active_stake_wei if entry is not None else 0,
                                                 self._min_stake_wei),
                )
        claimed_from_me: dict[str, int] = {}
        claimed_by_me: dict[str, int] = {}
        me = self.my_address
        with Session(indexer.engine) as session:
            rows = session.execute(
                select(VoucherClaimRow.origin, VoucherClaimRow.executor, VoucherClaimRow.paid_wei).where(
                    or_(VoucherClaimRow.origin == me, VoucherClaimRow.executor == me)
                )
            )
            for origin, executor, paid in rows:
                # The contract's claimed[origin][executor] grows by `paid` on every claim.
                if origin == me:
                    claimed_from_me[executor] = claimed_from_me.get(executor, 0) + int(paid)
                if executor == me:
                    claimed_by_me[origin] = claimed_by_me.get(origin, 0) + int(paid)
        # Claims someone else submitted (or that raced ours) still count as paid (the mark only rises).
        for origin, paid in claimed_by_me.items():
            self.store.mark_claimed(origin, paid)
        if cursor is not None:
            block_number, block_hash = cursor.block_number, bytes.fromhex(cursor.block_hash.removeprefix("0x"))
        else:
            block = indexer.w3.eth.get_block("latest")
            block_number, block_hash = int(block["number"]), bytes(block["hash"])
        return ChainView(
            peers=peers,
            pubkeys=pubkeys,
            endpoints=endpoints,
            funds_wei=funds,
            own=indexer.account(me),
            claimed_from_me=claimed_from_me,
            claimed_by_me=claimed_by_me,
            block_number=block_number,
            block_hash=block_hash,
        )

    def peers(self) -> list[PeerRecord]:
        """Active registered nodes (this node included) as of the last refresh, by address."""
        return [self._view.peers[a] for a in sorted(self._view.peers)]

    def peer(self, address: str) -> PeerRecord | None:
        """One active registered node, or None."""
        return self._view.peers.get(checksum_or_none(address) or "")

    def pubkey_of(self, address: str) -> bytes | None:
        """The ed25519 key `address` registered (active or not); None if it never registered."""
        return self._view.pubkeys.get(checksum_or_none(address) or "")

    def contact(self, address: str) -> Peer | None:
        """How to reach any node that ever registered (one that left still serves its duel evidence); None
        if it never did."""
        checksummed = checksum_or_none(address) or ""
        endpoint = self._view.endpoints.get(checksummed)
        if endpoint is None:
            return None
        record = self._view.peers.get(checksummed)
        return record.routing_peer() if record is not None else Peer(checksummed, 0, frozenset(), endpoint)

    def stake_wei(self) -> int:
        """This node's active stake."""
        own = self._view.own
        return 0 if own is None else own.active_stake_wei

    def credit_wei(self) -> int:
        """Free on-chain credit minus fees promised in vouchers and not yet claimed (may be negative)."""
        own = self._view.own
        credit = 0 if own is None else own.credit_wei
        return credit - self._unclaimed_promises_wei()

    def _unclaimed_promises_wei(self) -> int:
        claimed = self._view.claimed_from_me
        return sum(max(0, total - claimed.get(executor, 0)) for executor, total in self._promised.items())

    def recent_block_hash(self) -> bytes:
        """The hash (32 bytes) of the newest indexed block: the public seed of PoS selection."""
        return self._view.block_hash

    def recent_block_number(self) -> int:
        """The number of the block `recent_block_hash` belongs to (-1 before the first refresh)."""
        return self._view.block_number
