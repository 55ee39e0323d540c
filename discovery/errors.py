"""Discovery's exceptions: one root, one branch per thing a caller can act on.

::

    DiscoveryError          anything discovery refuses or cannot do, with a message for people
    +-- NameConflict        another responder already publishes this node's service name

discovery/ imports nothing of Parley's, so this tree does not hang under ``node.errors``;
the node wraps these where it turns them into problem details.
"""

from __future__ import annotations

__all__ = ["DiscoveryError", "NameConflict"]


class DiscoveryError(Exception):
    """Root of every error the discovery package reports."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class NameConflict(DiscoveryError):
    """Another responder on the network answers for our service instance name."""

