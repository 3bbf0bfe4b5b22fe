"""What the parts of `sim.network.Simulation` share: the event kinds, the event queue (`_push`), the state
every part reads, and the steps one part takes for another (defined by the part that owns them)."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from wwwserve.node import routing
from wwwserve.sim.config import SimConfig
from wwwserve.sim.engine import EngineRequest
from wwwserve.sim.records import InFlightRequest, SimNode

if TYPE_CHECKING:
    from wwwserve.sim.duels import ContractLedger

__all__ = [
    "ARRIVE", "DUEL", "ENGINE", "JOIN", "LEAVE", "RETRY", "RETURN", "SAMPLE", "STAKE", "TIMEOUT", "USER", "VISIBLE",
    "SimulationCore",
]

# Event kinds, in the order ties are broken at one instant (heap entries are (time, seq, kind, ...)).
ARRIVE, ENGINE, RETRY, TIMEOUT, JOIN, LEAVE, STAKE, RETURN, VISIBLE, USER, DUEL, SAMPLE = range(12)


class SimulationCore:
    """The event queue and the shared state of a simulation (`sim.network.Simulation` sets it up)."""

    config: SimConfig
    nodes: list[SimNode]
    ledger: ContractLedger | None
    now: float
    _by_name: dict[str, SimNode]
    _indexes: dict[str, routing.StakeIndex] | None
    _heap: list[tuple[Any, ...]]
    _seq: int
    _open: int  # user requests not done, timed out or failed yet
    _duels_open: int
    _duel_requests: dict[int, InFlightRequest]  # an open duel's served request, until the duel ends
    _duel_copies: dict[int, InFlightRequest]  # the challenger's copy, while it runs

    def _push(self, t: float, kind: int, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, *args))

    # ---- defined by the part that owns them (sim.network, sim.network_nodes)

    def _close(self, req: InFlightRequest, status: str, at_s: float) -> None:
        raise NotImplementedError

    def _settle_engine(self, node: SimNode, finished: list[EngineRequest]) -> None:
        raise NotImplementedError

    def _stake_changed(self, node: SimNode, at_s: float) -> None:
        raise NotImplementedError

    def _auto_stake(self, node: SimNode) -> None:
        raise NotImplementedError
