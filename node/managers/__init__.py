"""The node's managers (DESIGN.md §2): each owns one concern of serving a request.

For now: the Model manager (model name → backend) and the Request manager (admission, local dispatch,
cancellation). Policy, Ledger and Communication managers join when delegation does.
"""

from wwwserve.node.managers.model import ModelManager
from wwwserve.node.managers.request import LocalStream, RequestManager

__all__ = ["LocalStream", "ModelManager", "RequestManager"]
