"""The pure parts of a simulated node's serving and ingest: GetUpdates' answer from a
store, and the header peek and statement decoding ingest starts with."""

from __future__ import annotations

from blacklist.delta import Kind
from blacklist.deltadecode import open_envelope
from blacklist.errors import CodecError
from blacklist.sim.messages import FeedUpdate, GetUpdates, Updates
from blacklist.store import RevocationStore
from blacklist.sync.budget import FeedFill, field_size, fill_updates
from blacklist.sync.freshness import HeadStatement, StatementRejected, decode_statement
from blacklist.sync.plan import SendDeltas, SendSnapshot, plan_updates


def answer_updates(store: RevocationStore, m: GetUpdates, limit: int) -> Updates:
    """GetUpdates' answer, as node/grpc/sync.py builds it: :func:`plan_updates` over the
    feeds held, the deltas filled to ``limit`` by :func:`fill_updates` (a feed stops at its
    first delta that does not fit; the child asks again), every head, every statement."""
    histories = store.histories()
    plan = plan_updates(histories, m.heads)
    heads = store.heads()
    held = [st.to_bytes() for _, st in sorted(store.statements.all().items())]
    sending: list[tuple[FeedUpdate, SendDeltas]] = []
    flagged: list[FeedUpdate] = []
    for publisher, action in plan.items():
        version = heads[publisher].version
        if isinstance(action, SendSnapshot):
            flagged.append(FeedUpdate(publisher, version, take_snapshot=True))
        elif isinstance(action, SendDeltas):
            sending.append((FeedUpdate(publisher, version), action))
    base = Updates(m.session, heads, [u for u, _ in sending] + flagged, held).size
    fills = [
        FeedFill(
            field_size(6) + 10, [histories[a.publisher].retained[v].size for v in a.versions()]
        )
        for _, a in sending
    ]
    counts = fill_updates(limit, base, fills)
    updates = list(flagged)
    for (update, action), n in zip(sending, counts, strict=True):
        deltas = (
            store.archive.deltas(action.publisher, action.first, action.first + n - 1) if n else []
        )
        updates.append(FeedUpdate(update.publisher, update.upstream_version, deltas))
    return Updates(m.session, heads, updates, held, m.request)


# decode_statement is a pure function of the bytes: the simulation decodes each distinct
# statement once (every pull answer carries every statement; a node decodes them all).
_DECODED: dict[bytes, HeadStatement | StatementRejected] = {}


def decoded_statement(data: bytes) -> HeadStatement:
    """:func:`decode_statement`, remembered; raises the same StatementRejected."""
    found = _DECODED.get(data)
    if found is None:
        try:
            found = decode_statement(data)
        except StatementRejected as exc:
            found = exc
        if len(_DECODED) > 200_000:
            _DECODED.clear()
        _DECODED[data] = found
    if isinstance(found, StatementRejected):
        raise found
    return found


def kind_and_publisher(data: bytes) -> tuple[Kind | None, str | None]:
    """Kind and publisher from a container header (None if it does not parse: acceptance
    then refuses it as malformed)."""
    try:
        envelope = open_envelope(data)
    except CodecError:
        return None, None
    return envelope.header.kind, envelope.publisher
