"""``python -m node export-filter``: the signed offline filter of a region prefix, read from
a node's store (read-only, beside a running node) and signed with the node's key
(blacklist/filters/offline.py has the layout and the rules; export.py builds it).

    python -m node export-filter --config node.toml --scope 44 --out 44.filter \\
        [--previous 44.old.filter --update-out 44.update] [--valid-hours 24]

The signing key is the config's ``signing_key``; its chain is the one of the config's
``certificate_chains`` whose leaf certifies that key, verified from ``trust_anchor`` (the
root key itself needs none). The key must be certified for a prefix of ``--scope``: the
filter is verified as a terminal would before it is written, so a node never ships a file
no reader accepts. With ``--previous``, partitions whose feed head has not moved are taken
over unchanged and ``--update-out`` gets the update a terminal holding the previous file
needs (only the bodies that changed). Exit code: 0 written, 2 refused (the reason on
stderr, nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from blacklist.certs import Certificate
from blacklist.chainverify import TrustAnchor
from blacklist.errors import BlacklistError
from blacklist.filters import export, offline, offline_read
from blacklist.follower import StoreFollower
from blacklist.headstatements import HeadStatements
from blacklist.signing import SigningKey
from blacklist.trustroots import anchor_for
from node.config import NodeConfig, load_config
from node.configfields import ConfigError
from node.keyfiles import KeyFileError, load_certificate_chain

EXIT_OK, EXIT_REFUSED = 0, 2
MIN_VALID_HOURS, MAX_VALID_HOURS = 1, 24 * 31  # a month at most: an offline file goes stale


class ExportRefused(Exception):
    """Why no filter was written (printed as one line)."""


def _signing_material(config: NodeConfig) -> tuple[SigningKey, list[Certificate], TrustAnchor]:
    key = config.signing_key()
    if key is None:
        raise ExportRefused(
            "this node has no signing_key: only a node with a certified key signs a filter"
        )
    if config.trust_anchor_path is None:
        raise ExportRefused(
            "this node has no trust_anchor: a filter's signer is certified from the root, "
            "which a terminal pins"
        )
    roots = config.trust_anchors()  # one, or two while the root moves (issue #14)
    for root in roots:
        if key.key_id == root.key_id:
            return key, [], root
    for paths in config.certificate_chain_paths:
        chain = load_certificate_chain(paths)
        if chain and chain[-1].key_id == key.key_id:
            return key, chain, anchor_for(roots, chain)
    raise ExportRefused(
        f"no certificate_chains entry ends in this node's key {key.key_id.hex()} "
        f"({key.publisher}): list the node's own chain in its config"
    )


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def export_filter(
    config: NodeConfig,
    scope: str,
    valid_seconds: int,
    previous_bytes: bytes | None = None,
    now: int | None = None,
) -> tuple[offline.OfflineFilter, export.Built, offline.OfflineFilter | None]:
    """The signed filter (verified as a terminal would), what was rebuilt, and the previous
    file it updates (verified too)."""
    key, chain, anchor = _signing_material(config)
    issued_at = int(time.time()) if now is None else now
    previous = None
    if previous_bytes is not None:
        previous = offline_read.verify(previous_bytes, anchor)
        if previous.scope != scope:
            raise ExportRefused(f"--previous covers scope {previous.scope!r}, not {scope!r}")
    follower = StoreFollower(config.data_dir, background=False)
    try:
        statements = HeadStatements(follower.env).all()
        sources = export.sources_from_store(follower, scope, statements)
    finally:
        follower.close()
    built = export.build_partitions(sources, previous)
    signed = export.sign_filter(
        key, chain, scope, issued_at, issued_at + valid_seconds, built.partitions
    )
    offline_read.verify_signer(signed, anchor, now=issued_at)
    return signed, built, previous


def _summary(f: offline.OfflineFilter, built: export.Built, size: int) -> str:
    cards = sum(p.cards.size for p in f.partitions)
    psams = sum(p.psams.size for p in f.partitions)
    fps = sum(len(p.cards.fingerprints) for p in f.partitions)
    bits = 8 * fps / cards if cards else 0.0
    return (
        f"scope {f.scope}: {len(f.partitions)} partitions ({len(built.rebuilt)} built, "
        f"{len(built.reused)} taken over), {cards} cards ({bits:.2f} bits each), {psams} PSAMs, "
        f"{size} bytes; false positives {offline.FALSE_POSITIVE_RATE:.2%} per partition; "
        f"fresh as of {f.fresh_at}, expires at {f.expires_at}; signed by {f.signer}"
    )


def _export(args: argparse.Namespace) -> int:
    if not MIN_VALID_HOURS <= args.valid_hours <= MAX_VALID_HOURS:
        print(
            f"error: --valid-hours {args.valid_hours} is outside "
            f"{MIN_VALID_HOURS}..{MAX_VALID_HOURS}",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    if args.update_out is not None and args.previous is None:
        print("error: --update-out needs --previous (the file it updates)", file=sys.stderr)
        return EXIT_REFUSED
    try:
        offline.check_scope_text(args.scope)
        config = load_config(args.config)
        previous_bytes = args.previous.read_bytes() if args.previous is not None else None
        signed, built, previous = export_filter(
            config, args.scope, args.valid_hours * 3600, previous_bytes
        )
    except (ConfigError, KeyFileError, ExportRefused, BlacklistError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    data = signed.to_bytes()
    _write(args.out, data)
    print(f"wrote {args.out}: {_summary(signed, built, len(data))}")
    if args.update_out is not None and previous is not None:
        update = export.update_bytes(signed, previous)
        _write(args.update_out, update)
        print(f"wrote {args.update_out}: {len(update)} bytes (rebuilt: {list(built.rebuilt)})")
    return EXIT_OK


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "export-filter", help="write the signed offline filter of a region prefix (for POS)"
    )
    p.add_argument("--config", required=True, type=Path, help="the node's TOML config")
    p.add_argument("--scope", required=True, help="region prefix, 1-6 digits, e.g. 44")
    p.add_argument("--out", required=True, type=Path, help="the filter file to write")
    p.add_argument("--previous", type=Path, help="the last file exported for this scope")
    p.add_argument("--update-out", type=Path, help="the update from --previous (to ship)")
    p.add_argument(
        "--valid-hours", type=int, default=24, help="hours until the file expires (1..744)"
    )
    p.set_defaults(fn=_export)
