"""The trust steps of `make demo` (issue #5, DESIGN.md §6): what node/local/pki.py set
up, callers refused for their role or region, and a key rotation whose revocation and new
certificate travel in the certifier's feed (``keys publish``): no node but the rotated
city restarts, and that one only to sign with its new key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from blacklist.authority import Revocation, build_delta
from blacklist.delta import FeedHead
from blacklist.entry import Reason
from blacklist.signing import suite
from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
    types_pb2,
)
from node.keyfiles import load_certificate, load_signing_key, load_trusted_key
from node.local.pki import MINISTRY, Command, FederationTrust
from node.local.scrape import sample, scrape
from node.local.session import RPC_TIMEOUT, Session
from node.local.up import NAMES, wait_linked

# Children that start before their upstream back off (node/sync_client.py, up to 10 s per
# try), so on a loaded machine the links of a restarted federation can take a while.
LINK_TIMEOUT = 40.0
DENIED = "blacklist_denied_calls_total"
REJECTED = "blacklist_deltas_rejected_total"


class TrustStepFailed(RuntimeError):
    """A node let through what it should have refused, or refused it for another reason."""


# -- what was set up ----------------------------------------------------------------------------


def _tls_lines(commands: list[Command], root: Path) -> list[str]:
    """``tls`` commands, the ``issue`` ones folded into one line per role (``$R`` = region)."""
    lines: list[str] = []
    by_role: dict[str, tuple[str, list[str]]] = {}
    for c in commands:
        if c.args[:2] != ("tls", "issue"):
            lines.append(c.text(root))
            continue
        role, region = c.args[c.args.index("--role") + 1], c.args[c.args.index("--region") + 1]
        template = Command(tuple(a.replace(region, "$R") for a in c.args), "").text(root)
        by_role.setdefault(role, (template, []))[1].append(region)
    for template, regions in by_role.values():
        lines.append(f"{template}   # R = {' '.join(regions)}")
    return lines


def _hierarchy(trust: FederationTrust, topology: Any) -> list[str]:
    children: dict[str, list[str]] = {}
    for region, *_ in topology:
        if region in trust.certs:
            children.setdefault(trust.issuers[region], []).append(region)
    root = load_trusted_key(trust.anchor)
    lines = [
        f"root {MINISTRY} ministry, {suite(root.suite_id).name} key {root.key_id.hex()[:8]}… "
        f"({trust.anchor.relative_to(trust.root)}: every config's trust_anchor)"
    ]

    def walk(region: str, indent: str) -> None:
        kids = children.get(region, [])
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            cert = load_certificate(trust.certs[kid])
            key_id = f"{suite(cert.suite_id).name} key {cert.key_id.hex()[:8]}"
            label = f"{kid} {NAMES.get(kid, '')}"
            width = 30 - len(indent)  # the columns after the name line up at every depth
            lines.append(
                f"{indent}{'└── ' if last else '├── '}{label:<{width}} scope {trust.scopes[kid]:<5}"
                f" signs its feed for {trust.prefixes[kid]}xx, {key_id}… "
                f"({trust.certs[kid].relative_to(trust.root)}, by "
                f"{'root' if trust.issuers[kid] == MINISTRY else trust.issuers[kid]})"
            )
            walk(kid, indent + ("    " if last else "│   "))

    walk(MINISTRY, "")
    return lines


def show_setup(demo: Session, seconds: float) -> None:
    fed = demo.federation
    trust = fed.trust
    assert trust is not None
    keys = [c for c in trust.commands if c.args[0] == "keys"]
    tls = [c for c in trust.commands if c.args[0] == "tls"]
    demo.say(
        f"trust: {len(trust.commands)} steps of the node CLI in {seconds:.2f} s (in-process: "
        f"each calls what its command calls), files under {fed.root}/:"
    )
    for c in keys:
        demo.show(c.text(fed.root))
    for line in _tls_lines(tls, fed.root):
        demo.show(line)
    demo.say("certified keys: every node trusts exactly the keys these chains certify")
    for line in _hierarchy(trust, fed.topology):
        demo.show(line)
    roles: dict[str, list[str]] = {}
    for name in trust.tls:
        role, _, region = name.partition("-")
        roles.setdefault(role, []).append(region)
    demo.say(
        f"mutual TLS on every link (CA {trust.ca.relative_to(fed.root)}, no node in plain "
        f"text): node ×{len(roles['node'])} (server certificate for 127.0.0.1 and localhost, "
        f"and client certificate towards its upstream), operator ×{len(roles['operator'])} "
        f"(Admin, {', '.join(roles['operator'])}), terminal ×{len(roles['terminal'])} "
        f"(CardStatus, {', '.join(roles['terminal'])})"
    )


# -- callers refused ----------------------------------------------------------------------------


def _refused(what: str, call: Callable[[], Any], code: grpc.StatusCode) -> str:
    try:
        call()
    except grpc.RpcError as exc:
        if exc.code() != code:
            raise TrustStepFailed(
                f"{what}: {exc.code().name}: {exc.details()}, expected {code.name}"
            ) from None
        return f"{exc.code().name}: {exc.details()}"
    raise TrustStepFailed(f"{what} was accepted; expected {code.name}")


def _revoke_as(demo: Session, region: str, client: str, card_region: str) -> Callable[[], Any]:
    channel = demo.federation.channel(region, client)
    demo.channels.append(channel)
    admin: Any = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    revocation = demo.revocation(card_region, int(time.time()))
    return lambda: admin.Revoke(
        admin_pb2.RevokeRequest(revocations=[revocation]), timeout=RPC_TIMEOUT
    )


def _denied(demo: Session, region: str) -> float:
    url = demo.federation.metrics_url(region)
    return sample(scrape(url), DENIED, reason="permission_denied", grpc_method="Revoke")


def refusals(demo: Session, guangzhou: str, beijing: str) -> None:
    """(a) a terminal calling Revoke, (b) an operator of Guangzhou revoking a Beijing card,
    and the same from Beijing's operator at Guangzhou's node; and a client without a
    certificate, which does not get past the TLS handshake."""
    fed = demo.federation
    before = {r: _denied(demo, r) for r in (guangzhou, beijing)}
    refusal = _refused(
        "Admin.Revoke with a terminal certificate",
        _revoke_as(demo, guangzhou, f"terminal-{guangzhou}", guangzhou),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    demo.say(
        f"Admin.Revoke of a Guangzhou card at {guangzhou}, as terminal-{guangzhou} → "
        f"refused: {refusal}"
    )
    refusal = _refused(
        f"Admin.Revoke of a {beijing} card by operator-{guangzhou}",
        _revoke_as(demo, beijing, f"operator-{guangzhou}", beijing),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    demo.say(
        f"Admin.Revoke of a Beijing card at {beijing}, as operator-{guangzhou} → refused: {refusal}"
    )
    refusal = _refused(
        f"Admin.Revoke of a {beijing} card at {guangzhou}",
        _revoke_as(demo, guangzhou, f"operator-{beijing}", beijing),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    demo.say(
        f"Admin.Revoke of a Beijing card at {guangzhou}, as operator-{beijing} → refused: {refusal}"
    )
    after = {r: _denied(demo, r) for r in (guangzhou, beijing)}
    # The first two are the role check's (counted); the third the node's own scope.
    if [after[r] - before[r] for r in (guangzhou, beijing)] != [1.0, 1.0]:
        raise TrustStepFailed(f"denied-call counters went from {before} to {after}")
    demo.show(
        f'{DENIED}{{reason="permission_denied",grpc_method="Revoke"}}: +1 at {guangzhou}, '
        f"+1 at {beijing} (the third "
        "refusal is the node's scope, not the caller's certificate)"
    )
    assert fed.trust is not None
    anonymous = grpc.secure_channel(
        fed.address(beijing),
        grpc.ssl_channel_credentials(root_certificates=fed.trust.ca.read_bytes()),
    )
    demo.channels.append(anonymous)
    status: Any = card_status_pb2_grpc.CardStatusStub(anonymous)  # type: ignore[no-untyped-call]
    request = card_status_pb2.CheckCardRequest(card_id=demo.revocation(guangzhou, 0).card_id)
    refusal = _refused(
        "CheckCard without a client certificate",
        lambda: status.CheckCard(request, timeout=RPC_TIMEOUT),
        grpc.StatusCode.UNAVAILABLE,
    )
    demo.say(
        f"CheckCard at {beijing} from a client without a certificate → refused in the TLS "
        f"handshake: {refusal.partition(':')[0]}"
    )


# -- a key rotation -----------------------------------------------------------------------------


def _head(demo: Session, region: str, publisher: str) -> FeedHead:
    status = demo.admin[region].Status(admin_pb2.StatusRequest(), timeout=RPC_TIMEOUT)
    for feed in status.feeds:
        if feed.publisher == publisher:
            return FeedHead(publisher, feed.version, feed.digest)
    return FeedHead.genesis(publisher)


def _wait_head(demo: Session, region: str, publisher: str, version: int) -> None:
    deadline = time.monotonic() + LINK_TIMEOUT
    while _head(demo, region, publisher).version < version:
        if time.monotonic() > deadline:
            raise TrustStepFailed(f"{region} did not get {publisher} v{version}")
        time.sleep(0.02)


def rotate_key(demo: Session, city: str, watcher: str) -> None:
    """(c) ``city`` publishes under its key; its province revokes that key (suspected stolen)
    and certifies a new one, and publishes both in its own feed (``keys publish``); every
    node takes them up without a restart; a delta the thief signs with the old key is refused
    at the province and at ``watcher``, and ``city`` (restarted with its new key) publishes
    on, seen at ``watcher``."""
    fed = demo.federation
    trust = fed.trust
    assert trust is not None
    first = demo.revocation(city, int(time.time()))
    answer = demo.revoke(city, [first])
    issued = int(time.time())  # the delta's issued_at is at most this
    demo.wait_for(watcher, first.card_id, types_pb2.REVOKED, time.perf_counter())
    old = fed.keys[city]
    old_id = load_signing_key(old.private).key_id.hex()[:8]
    demo.say(
        f"Admin.Revoke at {city} of {first.card_id} → feed {city} v{answer.version}, signed by "
        f"key {old_id}…; REVOKED at {watcher}"
    )
    # "--as-of now" must lie after that delta's issued_at (whole seconds), or the revocation
    # would also void what the key signed legitimately.
    time.sleep(max(0.0, issued + 1 - time.time()))
    # The revocation names the head the old key stood behind: a thief's delta past it is
    # refused whatever date it carries (issue #11).
    commands = trust.rotate(city, "compromised", last_version=answer.version)
    new_id = load_signing_key(fed.keys[city].private).key_id.hex()[:8]
    demo.say(
        f"key rotation: {trust.issuers[city]} revokes {city}'s key {old_id}… as of now, "
        f"after v{answer.version} (suspected stolen) and certifies a new key {new_id}… for scope {trust.scopes[city]}:"
    )
    for c in commands:
        demo.show(c.text(fed.root))
    issuer = trust.issuers[city]
    t0 = time.perf_counter()
    published = trust.publish(
        fed.address(issuer), issuer, [trust.revocations[-1], trust.certs[city]]
    )
    demo.show(published.text(fed.root))
    version = _head(demo, issuer, issuer).version
    for region in fed.nodes:
        _wait_head(demo, region, issuer, version)
    spread = time.perf_counter() - t0
    demo.say(
        f"{published.output.splitlines()[-1]}: the revocation and the new certificate reached "
        f"all {len(fed.nodes)} nodes in {spread * 1e3:.0f} ms (feed {issuer} v{version}); none "
        "restarted, each rebuilt its trusted keys on arrival"
    )
    fed.write_configs()
    demo.close_channels()
    t1 = time.perf_counter()
    fed.restart(city)
    demo.connect()
    wait_linked(fed, LINK_TIMEOUT)
    demo.say(
        f"restarted {city} alone, signing with its new key ({time.perf_counter() - t1:.1f} s "
        "with its sync link)"
    )
    for target in (issuer, watcher):
        _push_forgery(demo, city, old.private, target)
    demo.expect(watcher, first.card_id, types_pb2.REVOKED)
    second = demo.revocation(city, int(time.time()))
    answer = demo.revoke(city, [second])
    took = demo.wait_for(watcher, second.card_id, types_pb2.REVOKED, time.perf_counter())
    demo.say(
        f"Admin.Revoke at {city} → feed {city} v{answer.version} under the new key {new_id}…: "
        f"REVOKED at {watcher} {took * 1e3:.0f} ms later; {first.card_id[-6:]}… (v1, old key, "
        "signed before the revocation) is still REVOKED there"
    )


def _push_forgery(demo: Session, city: str, old_key: Path, upstream: str) -> None:
    """What a thief of the old key could do: sign the feed's next delta, dated now, and push
    it to ``upstream`` as if it were the city node (with the city's node certificate: the
    worst case, a stolen node)."""
    fed = demo.federation
    key = load_signing_key(old_key)
    head = _head(demo, upstream, city)
    card = demo.revocation(city, int(time.time())).card_id
    forged = build_delta(
        key, head, [Revocation(card, Reason.CANCELLED, int(time.time()))], (), int(time.time())
    )
    metrics = fed.metrics_url(upstream)
    before = sample(scrape(metrics), REJECTED, cause="key_revoked")
    channel = fed.channel(upstream, f"node-{city}")
    demo.channels.append(channel)
    sync: Any = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
    answer = sync.PushDeltas(
        sync_pb2.PushDeltasRequest(deltas=[forged.to_bytes()], node=city), timeout=RPC_TIMEOUT
    )
    after = sample(scrape(metrics), REJECTED, cause="key_revoked")
    rejected = list(answer.rejected)
    if answer.applied or len(rejected) != 1 or not rejected[0].startswith("key_revoked:"):
        raise TrustStepFailed(
            f"the forged {city} v{forged.version} pushed to {upstream}: applied "
            f"{answer.applied}, rejected {rejected}"
        )
    if after != before + 1:
        raise TrustStepFailed(f"{upstream} counted {after - before:g} key_revoked rejections")
    demo.say(
        f"a thief's delta {city} v{forged.version} signed with the revoked key, pushed to "
        f"{upstream} (Sync.PushDeltas) → rejected: {rejected[0]}; "
        f'{REJECTED}{{cause="key_revoked"}} +1 there; nothing applied'
    )
    demo.expect(upstream, card, types_pb2.NOT_REVOKED)
