"""The node's managers (DESIGN.md §2): each owns one concern of serving a request.

The Model manager (`model`: model name → backend, health, load), the Request manager (`request`:
admission, local dispatch, cancellation; `dispatch` is its decision half: run here or delegate to a peer
chosen by stake), the Policy manager (`policy`: what the policy sees and asks), the Ledger manager
(`ledger`: the node's view of the chain and its only transaction sender), the Communication manager
(`communication`: peers, signed messages, bans) and the Duel manager (`duel`: the node's parts in duels).
Only the first two are re-exported here; import the others from their modules.
"""

from wwwserve.node.managers.model import ModelManager
from wwwserve.node.managers.request import LocalStream, RequestManager

__all__ = ["LocalStream", "ModelManager", "RequestManager"]
