"""The national federation simulated in one process with the project's own sync core.

Every simulated node holds a real :class:`~blacklist.store.RevocationStore` (LMDB) and
makes the node's decisions with the library's pure functions: what to send a child
(:func:`blacklist.sync.plan.plan_updates`), what to push up (``plan_push``), whether an item
may be applied (:func:`blacklist.sync.accept.accept_signed`, through ``store.apply``), what
a refusal means (:func:`blacklist.sync.ingest.outcome_of`), and the signed freshness
(:mod:`blacklist.sync.freshness`). Only the transport is simulated: links with latency,
bandwidth, loss and partitions on a virtual clock (:mod:`blacklist.sim.events`), no
sockets and no sleeps. Nothing in the node or the server imports this package.

``python -m blacklist.sim`` runs the national scenarios and writes the report;
``python -m blacklist.sim faults --seed N`` replays one fault-injection seed.
"""
