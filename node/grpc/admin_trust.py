"""The Admin methods of issue #5 beside the card ones: the PSAM deny list and publishing trust
records (certificates, key revocations) in the authority's feed. Thin, like admin.py:
validate the request, hand the work to the hub through AdminServicer.publish_own
(node/ingest.py: the one apply path; then the snapshot policy), answer."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

from blacklist.audit import AuditAction, AuditChange
from blacklist.authority import Revocation
from blacklist.certs import Certificate, KeyRevocation, decode_trust_record
from blacklist.delta import Delta
from blacklist.entry import Reason
from blacklist.errors import CodecError
from blacklist.psam import canonical_psam, column_text, psam_key
from blacklist.store import ApplyResult, RevocationStore
from node.gen.blacklist.v1 import admin_pb2
from node.grpc.admin import AdminServicer, unique_ids
from node.grpc.calls import InvalidRequest, caller_of
from node.grpc.messages import Context, entry_message
from node.metrics import NodeMetrics

MAX_TRUST_RECORDS = 1_000


def _unique(ids: Sequence[str], what: str) -> list[str]:
    return unique_ids(ids, what, "PSAM", canonical_psam)


def _denied_in(delta: Delta) -> list[AuditChange]:
    adds = delta.psam_adds
    return [AuditChange(column_text(adds.cards, i), int(adds.reason[i])) for i in range(len(adds))]


def _lifted_in(delta: Delta) -> list[AuditChange]:
    gone = delta.psam_removes
    return [AuditChange(column_text(gone, i)) for i in range(len(gone))]


class TrustAdmin:
    """RevokePsam, ReinstatePsam, GetPsam and PublishTrust, served as part of Admin."""

    def __init__(self, admin: AdminServicer, store: RevocationStore, metrics: NodeMetrics):
        self._admin = admin
        self._store = store
        self._metrics = metrics

    def record_regions(self, request: admin_pb2.PublishTrustRequest) -> Iterator[str]:
        """What each record of a PublishTrust request is about, for the operator's region
        check (node/grpc/calls.py, the rule Revoke's cards follow): a certificate's publisher and
        every prefix it certifies; for a key revocation, the revoked key's publisher and
        prefixes as this node knows them, or this authority's own code when the key is
        unknown here (so only an operator of the whole authority may revoke it). A record
        that does not decode names nothing; PublishTrust refuses it."""
        authority = self._admin._authority
        keys: Any = authority.keys if authority is not None else {}
        for data in request.records:
            try:
                record = decode_trust_record(bytes(data))
            except CodecError:
                continue
            if isinstance(record, Certificate):
                yield record.publisher
                yield from record.prefixes
            elif isinstance(record, KeyRevocation):
                known = keys.get(record.revoked_key_id)
                if known is not None:
                    yield known.publisher
                    yield from known.prefixes
                elif authority is not None:
                    yield authority.publisher

    @staticmethod
    def _response(result: ApplyResult, digest: bytes) -> admin_pb2.PublishResponse:
        return admin_pb2.PublishResponse(
            publisher=result.publisher,
            version=result.version,
            digest=digest,
            added=result.psams_denied,
            removed=result.psams_removed,
            absent=result.absent_removes,
        )

    async def RevokePsam(
        self, request: admin_pb2.RevokePsamRequest, context: Context
    ) -> admin_pb2.PublishResponse:
        authority = self._admin._need_authority()
        psams = _unique([r.psam_id for r in request.revocations], "deny")
        now = int(self._admin._clock())
        denials = []
        for psam, r in zip(psams, request.revocations, strict=True):
            if r.reason not in Reason._value2member_map_:
                raise InvalidRequest(f"PSAM {psam}: reason {r.reason} is not a known reason")
            denials.append(Revocation(psam, Reason(r.reason), r.effective_time or now))
        audit = self._admin.audit_writer(AuditAction.PSAM_REVOKE, _denied_in, caller_of(context))
        work = functools.partial(authority.publish_psams, denials, (), snapshot=False, also=audit)
        result, digest = await self._admin.publish_own(authority, work)
        self._metrics.psam_revocations.inc(result.psams_denied)
        return self._response(result, digest)

    async def ReinstatePsam(
        self, request: admin_pb2.ReinstatePsamRequest, context: Context
    ) -> admin_pb2.PublishResponse:
        authority = self._admin._need_authority()
        psams = _unique(list(request.psam_ids), "reinstate")
        audit = self._admin.audit_writer(AuditAction.PSAM_REINSTATE, _lifted_in, caller_of(context))
        work = functools.partial(authority.publish_psams, (), psams, snapshot=False, also=audit)
        result, digest = await self._admin.publish_own(authority, work)
        return self._response(result, digest)

    async def GetPsam(
        self, request: admin_pb2.GetPsamRequest, context: Context
    ) -> admin_pb2.GetPsamResponse:
        entry = self._store.psams.lookup(psam_key(canonical_psam(request.psam_id)))
        if entry is None:
            return admin_pb2.GetPsamResponse(denied=False)
        return admin_pb2.GetPsamResponse(denied=True, entry=entry_message(entry))

    async def PublishTrust(
        self, request: admin_pb2.PublishTrustRequest, context: Context
    ) -> admin_pb2.PublishResponse:
        authority = self._admin._need_authority()
        records = [bytes(r) for r in request.records]
        if not records or len(records) > MAX_TRUST_RECORDS:
            raise InvalidRequest(f"send 1..{MAX_TRUST_RECORDS} records, got {len(records)}")
        for i, data in enumerate(records):
            try:
                record = decode_trust_record(data)
            except CodecError as exc:
                raise InvalidRequest(f"record {i}: {exc}") from None
            own = isinstance(record, Certificate) and record.publisher == authority.publisher
            if record.issuer_key_id != authority.key.key_id and not own:
                raise InvalidRequest(
                    f"record {i} ({record.label}) is issued by key "
                    f"{record.issuer_key_id.hex()}, not by this authority's signing key "
                    f"{authority.key.key_id.hex()} (nor is it this authority's own certificate)"
                )
        work = functools.partial(authority.publish_trust, records, snapshot=False)
        result, digest = await self._admin.publish_own(authority, work)
        return admin_pb2.PublishResponse(
            publisher=result.publisher,
            version=result.version,
            digest=digest,
            added=result.trust_records,
        )


class AdminService(AdminServicer):
    """Admin as a node serves it: AdminServicer's card methods and :class:`TrustAdmin`'s
    PSAM and trust ones, as one servicer (the Edge interceptor meters all of them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trust = TrustAdmin(self, self._store, self._metrics)

    async def RevokePsam(
        self, request: admin_pb2.RevokePsamRequest, context: Context
    ) -> admin_pb2.PublishResponse:
        return await self.trust.RevokePsam(request, context)

    async def ReinstatePsam(
        self, request: admin_pb2.ReinstatePsamRequest, context: Context
    ) -> admin_pb2.PublishResponse:
        return await self.trust.ReinstatePsam(request, context)

    async def GetPsam(
        self, request: admin_pb2.GetPsamRequest, context: Context
    ) -> admin_pb2.GetPsamResponse:
        return await self.trust.GetPsam(request, context)

    async def PublishTrust(
        self, request: admin_pb2.PublishTrustRequest, context: Context
    ) -> admin_pb2.PublishResponse:
        return await self.trust.PublishTrust(request, context)
