"""The Admin service: operators' writes and reads, each method a call into the library.

Writes (Admin.Revoke/Reinstate) run on one dedicated thread, because an LMDB write
transaction must stay on the thread that began it (py-lmdb docs) and a large delta should
not stall the event loop that answers checks. Admin reads that can be large (ListAudit) run
on a small pool of reader threads, never on the event loop nor on the writer thread. The
audit records of a call (blacklist/audit.py) are written in the very transaction that
applies its delta; a refused call writes none.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from blacklist.audit import KEY_SIZE, AuditAction, AuditChange
from blacklist.authority import Authority, Revocation
from blacklist.cardid import CardId
from blacklist.clock import Clock
from blacklist.delta import Delta
from blacklist.entry import Entry, Reason
from blacklist.errors import shown
from blacklist.lapse import LapseError, LapsePolicy
from blacklist.psam import PSAM_ID_LENGTH, canonical_psam
from blacklist.records import ENTRY_KEY_LENGTH, entry_key
from blacklist.store import ApplyResult, RevocationStore
from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
)
from node.grpc.calls import (
    InvalidRequest,
    NotAnAuthority,
    caller_of,
)
from node.grpc.messages import Context, entry_message, enum_value, feed_info
from node.ingest import Ingest
from node.metrics import NodeMetrics

MAX_WRITE = 100_000
MAX_PAGE = 10_000
AUDIT_PAUSE_EVERY = 64  # audit records a reader thread handles between giving up the GIL
DEFAULT_PAGE = 100
R = TypeVar("R")  # what a publication returns besides its delta (ApplyResult, ...)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logging.getLogger("node").error("signing a snapshot failed: %r", future.exception())


def _paging(page_size: int, page_token: str, key_length: int) -> tuple[int, bytes | None]:
    """A listing's page size (default, limit) and the stored key its token resumes after."""
    size = page_size or DEFAULT_PAGE
    if size > MAX_PAGE:
        raise InvalidRequest(f"page_size {size} exceeds the limit of {MAX_PAGE}")
    if not page_token:
        return size, None
    try:
        after = bytes.fromhex(page_token)
    except ValueError:
        after = b""
    if len(after) != key_length:
        raise InvalidRequest(f"page_token {shown(page_token)} is not valid")
    return size, after


def unique_ids(
    ids: Sequence[str], what: str, noun: str, canonical: Callable[[str], str]
) -> list[str]:
    """The canonical ids of a write request: not empty, at most MAX_WRITE, no id twice."""
    if not ids:
        raise InvalidRequest(f"no {noun}s to {what}")
    if len(ids) > MAX_WRITE:
        raise InvalidRequest(f"{len(ids)} {noun}s exceed the limit of {MAX_WRITE} per call")
    out = [canonical(i) for i in ids]
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(i for i in out if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InvalidRequest(f"{noun} {dup} appears more than once in the request")
    return out


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        *,
        role: str,
        region: str,
        store: RevocationStore,
        authority: Authority | None,
        metrics: NodeMetrics,
        writer: ThreadPoolExecutor,
        clock: Clock,
        build_version: str,
        hub: Ingest,
        reads: ThreadPoolExecutor | None = None,
        lapse: LapsePolicy | None = None,
    ) -> None:
        self._hub = hub
        # The authority's default lapse periods by reason (config lapse_days; issue #17).
        self._lapse = lapse or LapsePolicy()
        # Reader threads for audit queries (the node passes its own and shuts it down).
        self._reads = reads or ThreadPoolExecutor(2, thread_name_prefix="admin-read")
        self._role = role
        self._region = region
        self._store = store
        self._authority = authority
        self._metrics = metrics
        self._writer = writer
        self._clock = clock
        self._build = build_version

    def _need_authority(self) -> Authority:
        if self._authority is None:
            raise NotAnAuthority(
                f"node {self._region} has no signing key: revocations are entered at the "
                "authority that owns the card's region"
            )
        return self._authority

    def _publish_and_audit(
        self,
        authority: Authority,
        revocations: Sequence[Revocation],
        reinstatements: Sequence[str],
        operator: str,
    ) -> tuple[Delta | None, ApplyResult]:
        """On the writer thread: publish, then audit what was published (never a refusal,
        never a card the call left as it was: those are not in the delta either)."""
        revocations, reinstatements = authority.pending(revocations, reinstatements)
        if revocations:
            changes = [AuditChange(r.card_id, int(r.reason), r.expires_at) for r in revocations]
            action = AuditAction.REVOKE
        else:
            changes = [AuditChange(c) for c in reinstatements]
            action = AuditAction.REINSTATE
        return authority.publish_pending(
            revocations,
            reinstatements,
            snapshot=False,
            also=self.audit_writer(action, lambda _: changes, operator),
        )

    def audit_writer(
        self,
        action: AuditAction,
        changes: Callable[[Delta], Sequence[AuditChange]],
        operator: str,
    ) -> Callable[[Any, Delta], object]:
        """Audit records for a delta, written in the transaction that applies it (so the
        delta and its records commit together); ``changes`` names them from the delta."""

        def write(txn: Any, delta: Delta) -> object:
            return self._store.audit.stage(
                txn,
                action,
                changes(delta),
                operator=operator,
                feed_version=delta.version,
                when=int(self._clock()),
            )

        return write

    async def _publish(
        self,
        revocations: Sequence[Revocation],
        reinstatements: Sequence[str],
        operator: str,
    ) -> admin_pb2.PublishResponse:
        authority = self._need_authority()
        result, digest = await self.publish_own(
            authority,
            functools.partial(
                self._publish_and_audit, authority, revocations, reinstatements, operator
            ),
        )
        return self._published(result, digest, len(revocations), len(reinstatements))

    async def publish_own(
        self, authority: Authority, work: Callable[[], tuple[Delta | None, R]]
    ) -> tuple[R, bytes]:
        """One publication of this node's authority, through the hub like every delta (node/
        hub.py: applied on the writer thread, counted, sent on); then a snapshot signed if the
        policy asks. (result, digest of the feed head after it)."""
        delta, result = await self._hub.publish(work)
        if delta is None:  # nothing would change: no delta, the feed stays where it was
            return result, self._store.head(authority.publisher).digest
        # The delta is on its way; signing a snapshot (when the policy asks) must not delay
        # it, so it runs after, on the writer thread, before the next write.
        snap = asyncio.get_running_loop().run_in_executor(self._writer, authority.maybe_snapshot)
        snap.add_done_callback(_log_failure)
        return result, delta.digest

    @staticmethod
    def _published(
        result: ApplyResult, digest: bytes, revoked: int, reinstated: int
    ) -> admin_pb2.PublishResponse:
        """The answer to a call of ``revoked`` revocations and ``reinstated`` reinstatements,
        of which only the ones that changed something were published (Authority.pending)."""
        return admin_pb2.PublishResponse(
            publisher=result.publisher,
            version=result.version,
            digest=digest,
            added=result.added,
            changed=result.changed,
            removed=result.removed,
            absent=reinstated - result.removed,
            unchanged=revoked - result.added - result.changed,
        )

    @staticmethod
    def _unique_cards(ids: Sequence[str], what: str) -> list[str]:
        return unique_ids(ids, what, "card", lambda c: CardId.parse(c).text)

    async def Revoke(
        self, request: admin_pb2.RevokeRequest, context: Context
    ) -> admin_pb2.PublishResponse:
        self._need_authority()
        cards = self._unique_cards([r.card_id for r in request.revocations], "revoke")
        now = int(self._clock())
        revocations = []
        for card, r in zip(cards, request.revocations, strict=True):
            if r.reason not in Reason._value2member_map_:
                raise InvalidRequest(
                    f"card {card}: reason {r.reason} is not one of "
                    + ", ".join(f"{x.value}={x.name}" for x in Reason)
                )
            reason, effective = Reason(r.reason), r.effective_time or now
            try:
                end = self._lapse.end_time(card, reason, effective, r.expires_at, now)
            except LapseError as exc:
                raise InvalidRequest(str(exc)) from None
            revocations.append(Revocation(card, reason, effective, end))
        response = await self._publish(revocations, [], caller_of(context))
        self._metrics.revocations.inc(response.added + response.changed)
        return response

    async def Reinstate(
        self, request: admin_pb2.ReinstateRequest, context: Context
    ) -> admin_pb2.PublishResponse:
        self._need_authority()
        cards = self._unique_cards(list(request.card_ids), "reinstate")
        response = await self._publish([], cards, caller_of(context))
        self._metrics.reinstatements.inc(response.removed)
        return response

    async def GetEntry(
        self, request: admin_pb2.GetEntryRequest, context: Context
    ) -> admin_pb2.GetEntryResponse:
        card = CardId.parse(request.card_id)
        entries = self._store.lookup_all(card.key)
        return admin_pb2.GetEntryResponse(
            found=bool(entries), entries=[entry_message(e) for e in entries]
        )

    async def ListEntries(
        self, request: admin_pb2.ListEntriesRequest, context: Context
    ) -> admin_pb2.ListEntriesResponse:
        prefix = request.region_prefix
        if prefix and (not prefix.isdigit() or not prefix.isascii() or len(prefix) > 6):
            raise InvalidRequest(f"region_prefix {shown(prefix)} must be 0-6 digits")
        size, start = _paging(request.page_size, request.page_token, ENTRY_KEY_LENGTH)
        response = admin_pb2.ListEntriesResponse()
        last: Entry | None = None
        for n, entry in enumerate(self._store.iter_entries(prefix, start)):
            if n == size:
                assert last is not None
                response.next_page_token = entry_key(last.card_id, last.publisher).hex()
                break
            response.entries.append(entry_message(entry))
            last = entry
        return response

    async def Status(
        self, request: admin_pb2.StatusRequest, context: Context
    ) -> admin_pb2.StatusResponse:
        now = self._clock()
        authority = self._authority
        return admin_pb2.StatusResponse(
            role=self._role,
            region=self._region,
            publisher=authority.publisher if authority else "",
            scope=list(authority.key.prefixes) if authority else [],
            feeds=[feed_info(f, now) for _, f in sorted(self._store.feeds.items())],
            entries=self._store.entry_count(),
            build_version=self._build,
        )

    async def ListAudit(
        self, request: admin_pb2.ListAuditRequest, context: Context
    ) -> admin_pb2.ListAuditResponse:
        # Validated here (cheap); read on a reader thread, so that the event loop answers
        # checks meanwhile (issue #11 item 8).
        card = None
        if len(request.card_id) == PSAM_ID_LENGTH:
            card = canonical_psam(request.card_id)
        elif request.card_id:
            card = CardId.parse(request.card_id).text
        since, until = request.since, request.until
        if since < 0 or until < 0:
            raise InvalidRequest(f"since {since} and until {until} must be unix seconds >= 0")
        if until and until < since:
            raise InvalidRequest(f"until {until} is before since {since}")
        query = audit_query(card, since, until)
        size, token = _paging(request.page_size, request.page_token, KEY_SIZE + _TAG.size)
        after = None
        if token is not None:
            if _TAG.unpack(token[KEY_SIZE:])[0] != query:
                raise InvalidRequest(
                    f"page_token {shown(request.page_token)} belongs to another query"
                )
            after = token[:KEY_SIZE]
        work = functools.partial(
            self._audit_page, size, query, card=card, since=since, until=until, after=after
        )
        return await asyncio.get_running_loop().run_in_executor(self._reads, work)

    def _audit_page(
        self,
        size: int,
        query: int,
        *,
        card: str | None,
        since: int,
        until: int,
        after: bytes | None,
    ) -> admin_pb2.ListAuditResponse:
        """On a reader thread: one page read and built into its message. Python threads
        share one interpreter lock, and a thread that keeps it makes the event loop wait
        up to the 5 ms switch interval each time it wants it back: so the reader gives it
        up every AUDIT_PAUSE_EVERY records (``time.sleep(0)``), and checks wait a fraction
        of that."""
        records, more = self._store.audit.page(
            size,
            card_id=card,
            since=since,
            until=until or None,
            after=after,
            pause=functools.partial(time.sleep, 0),
            pause_every=AUDIT_PAUSE_EVERY,
        )
        response = admin_pb2.ListAuditResponse()
        add = response.records.add
        for n, rec in enumerate(records):
            if n % AUDIT_PAUSE_EVERY == AUDIT_PAUSE_EVERY - 1:
                time.sleep(0)
            add(
                operator=rec.operator,
                time=rec.time,
                action=enum_value(rec.action),
                card_id=rec.card_id,
                reason=enum_value(rec.reason),
                feed_version=rec.feed_version,
                expires_at=rec.expires_at or 0,
            )
        if more:
            response.next_page_token = (records[-1].key + _TAG.pack(query)).hex()
        return response


# A ListAudit page token: the last record's key and a tag of the query it belongs to, so that
# a token is refused (INVALID_ARGUMENT) with any other card or time range.
_TAG = struct.Struct(">I")


def audit_query(card: str | None, since: int, until: int) -> int:
    return zlib.crc32(f"{card or ''}|{since}|{until}".encode())
