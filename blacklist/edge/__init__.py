"""The edge replica: a node's follower inside a gateway's process (DESIGN §6a).

The one library package that talks gRPC (it is a client of the Sync API, with the stubs of
node/gen): ``child`` is the read-only child side of sync that nodes share, ``replica`` the
embedded replica, ``answer`` its answers and freshness policy.

    replica = EdgeReplica.open("/var/lib/edge", upstreams=["10.0.0.2:50051"],
                               trust_anchor=anchor, tls=EdgeTls(ca, cert, key),
                               max_feed_age=3600)
    replica.check(card_id).status   # EdgeStatus: NOT_REVOKED, REVOKED, ..., STALE
"""

from blacklist.edge.answer import EdgeAnswer, EdgeBatch, EdgeStatus, StalePolicy
from blacklist.edge.replica import EdgeReplica
from blacklist.edge.settings import EdgeCounters, EdgeTls

__all__ = [
    "EdgeAnswer",
    "EdgeBatch",
    "EdgeCounters",
    "EdgeReplica",
    "EdgeStatus",
    "EdgeTls",
    "StalePolicy",
]
