"""The CardStatus service: terminals' checks, each a call into the checker. Not timed or
counted per call here: the edge interceptor does that once for every call
(node/grpc/edge.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import numpy as np
from numpy.typing import NDArray

from blacklist.checker import BatchResult, Checker, CheckResult, CheckStatus
from blacklist.packed import PackedBatchError, packed_count
from blacklist.psam import PsamDenied
from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.grpc.calls import InvalidRequest
from node.grpc.messages import STATUS, Context, enum_value
from node.metrics import NodeMetrics

REFUSAL_HEADER = "blacklist-refusal"  # trailing metadata naming why a check was refused
_INVALID = types_pb2.CardStatusCode.Value("INVALID_CARD_ID")  # packed batches only


class CardStatusServicer(card_status_pb2_grpc.CardStatusServicer):
    def __init__(self, checker: Checker, metrics: NodeMetrics, max_batch: int) -> None:
        self._checker = checker
        self._max_batch = max_batch
        self._counted = {s: metrics.checks.labels(s.name) for s in CheckStatus}
        self._psam_refusals = {
            m: metrics.psam_refusals.labels(m) for m in ("CheckCard", "BatchCheck", "CheckStream")
        }

    def _answer(self, card_id: str) -> card_status_pb2.CheckCardResponse:
        # Not timed here: the Edge interceptor times each call once (node/grpc/edge.py).
        result = self._checker.check(card_id)
        self._counted[result.status].inc()
        return self._response(result, card_id.upper())

    @staticmethod
    def _response(result: CheckResult, canonical: str) -> card_status_pb2.CheckCardResponse:
        age = result.feed_age_seconds
        response = card_status_pb2.CheckCardResponse(
            status=STATUS[result.status],
            publisher=result.publisher or "",
            feed_version=result.feed_version,
            feed_age_seconds=age if age is not None else 0.0,
            card_id=canonical,
        )
        if result.entry is not None:
            response.reason = enum_value(result.entry.reason)
            response.effective_time = result.entry.effective_time
            response.expires_at = result.entry.expires_at or 0
        return response

    def _admit(self, psam_id: str, method: str, context: Context) -> None:
        """Refuse a terminal whose PSAM is denied (DESIGN §6), counted; no PSAM, no check."""
        if not psam_id:
            return
        entry = self._checker.psam_denial(psam_id)
        if entry is not None:
            self._psam_refusals[method].inc()
            context.set_trailing_metadata(((REFUSAL_HEADER, "psam-denied"),))
            raise PsamDenied(
                entry.card_id, entry.reason.name, entry.effective_time, entry.publisher
            )

    async def CheckCard(
        self, request: card_status_pb2.CheckCardRequest, context: Context
    ) -> card_status_pb2.CheckCardResponse:
        if request.psam_id:
            self._admit(request.psam_id, "CheckCard", context)
        return self._answer(request.card_id)

    async def BatchCheck(
        self, request: card_status_pb2.BatchCheckRequest, context: Context
    ) -> card_status_pb2.BatchCheckResponse:
        self._admit(request.psam_id, "BatchCheck", context)
        packed = request.packed_ids
        ids = request.card_ids
        if packed:
            if ids:
                raise InvalidRequest("send card_ids or packed_ids, not both")
            try:
                count = packed_count(packed, self._max_batch)
            except PackedBatchError as exc:
                raise InvalidRequest(str(exc)) from None
            found = self._checker.check_packed(packed)
            response = card_status_pb2.BatchCheckResponse(count=count)
            self._batch_answer(found.batch, found.index_of, response)
            if found.malformed:  # answered in index order, as every other card
                cards = [
                    *response.cards,
                    *(
                        card_status_pb2.BatchCard(index=i, status=_INVALID, error=e.problem)
                        for i, e in found.malformed.items()
                    ),
                ]
                del response.cards[:]
                response.cards.extend(sorted(cards, key=lambda c: c.index))
            return response
        if not ids:
            raise InvalidRequest("empty batch: send at least one card id")
        if len(ids) > self._max_batch:
            raise InvalidRequest(
                f"batch of {len(ids)} card ids exceeds the limit of {self._max_batch} per call"
            )
        response = card_status_pb2.BatchCheckResponse(count=len(ids))
        self._batch_answer(self._checker.check_many(ids), None, response)
        return response

    def _batch_answer(
        self,
        result: BatchResult,
        index_of: Callable[[NDArray[np.intp]], NDArray[np.intp]] | None,
        response: card_status_pb2.BatchCheckResponse,
    ) -> None:
        """Fill ``response`` with every answer of ``result`` that is not NOT_REVOKED (row
        ``r`` is request index ``index_of(r)``) and the freshness of the feeds that
        answered, and count the checks."""
        rows = np.flatnonzero(result.statuses != CheckStatus.NOT_REVOKED)
        indices = (index_of(rows) if index_of is not None else rows).tolist()
        for row, i in zip(rows.tolist(), indices, strict=True):
            answer = result[row]
            card = response.cards.add(index=i, status=STATUS[answer.status])
            card.publisher = answer.publisher or ""
            if answer.entry is not None:
                card.reason = enum_value(answer.entry.reason)
                card.effective_time = answer.entry.effective_time
                card.expires_at = answer.entry.expires_at or 0
        seen: set[str] = set()
        for answer in [*result.answering_feeds(), *result.revoked.values()]:
            if answer.publisher and answer.publisher not in seen and answer.feed_checked_at:
                seen.add(answer.publisher)
                response.feeds.add(
                    publisher=answer.publisher,
                    version=answer.feed_version,
                    age_seconds=answer.feed_age_seconds or 0.0,
                )
        for status, n in result.counts().items():
            self._counted[status].inc(n)

    async def CheckStream(
        self, request_iterator: AsyncIterator[card_status_pb2.CheckCardRequest], context: Context
    ) -> AsyncIterator[card_status_pb2.CheckCardResponse]:
        async for request in request_iterator:
            if request.psam_id:
                self._admit(request.psam_id, "CheckStream", context)
            yield self._answer(request.card_id)
