"""The C reference reader (reader/offline_filter.c), built here with the system compiler,
against the Python reader (blacklist/filters/offline.py): the same answer for every id of a
corpus (revoked, not revoked, false positives, other provinces, malformed, PSAMs, an
expired filter), and the same refusals of damaged files and of an update not yet applied."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from blacklist.certs import Certificate, issue_certificate
from blacklist.chainverify import TrustAnchor
from blacklist.filters import export, offline, offline_read
from blacklist.signing import SigningKey
from tests.filter_fixtures import (
    ANCHOR,
    CHAINS,
    DAY,
    GD,
    GD_CERT,
    GZ,
    ROOT,
    SZ,
    T,
    World,
    card,
    psam,
)

GD2 = SigningKey.generate("440000", ["4499"])  # the province's next key (a rotation)
BIN_GD = issue_certificate(ROOT, GD, ["44"], T - DAY, T + 365 * DAY, serial=38, form="binary")

CHECKOUT = Path(__file__).resolve().parent.parent
SOURCE = CHECKOUT / "reader" / "offline_filter.c"


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc")
    assert cc is not None, "the C reader is built with the system compiler `cc`"
    out = tmp_path_factory.mktemp("reader") / "offline_filter"
    subprocess.run(
        [cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o", out, SOURCE],
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(tmp_path_factory.mktemp("store"))
    w.publish("440100", [card(i) for i in range(3000)], deny=[psam(i) for i in range(20)])
    w.publish("440100", [card(i, "440103") for i in range(500)], [card(i) for i in range(100)])
    w.publish("440300", [card(i, "440304") for i in range(700)])
    w.publish("440000", [card(i, "449900") for i in range(50)], deny=[psam(1, "449900")])
    w.publish("110100", [card(i, "110101") for i in range(300)])
    w.state("440100")
    return w


def run_c(reader: Path, data: bytes, tmp: Path, now: int, ids: list[str]) -> list[str]:
    path = tmp / "f.filter"
    path.write_bytes(data)
    out = subprocess.run(
        [reader, "check", path, str(now)],
        input="".join(i + "\n" for i in ids).encode("utf-8"),
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().splitlines()


def run_python(f: offline.OfflineFilter, now: int, ids: list[str]) -> list[str]:
    lines = []
    for i in ids:
        a = f.check_psam(i[5:], now) if i.startswith("psam:") else f.check_card(i, now)
        lines.append(f"{a.verdict.name} {a.publisher or '-'} {a.fresh_at}")
    return lines


def corpus() -> list[str]:
    rng = random.Random(16)
    ids = [card(i) for i in range(3000)]  # revoked, and 100 of them reinstated
    ids += [card(i, "440103") for i in range(500)]
    ids += [card(i, "440304") for i in range(700)] + [card(i, "449900") for i in range(50)]
    # Never revoked, under the scope: NOT_REVOKED, or a false positive (both readers alike).
    ids += [
        f"4401{rng.randrange(100):02d}D156000005{rng.getrandbits(64):016X}" for _ in range(8000)
    ]
    ids += [card(i, "110101") for i in range(50)]  # another province
    ids += [card(1).lower(), card(2)[:6] + "d156000005" + card(2)[16:].lower()]
    ids += [
        "",
        card(1)[:-1],
        card(1) + "0",
        "99" + card(1)[2:],  # no such province
        card(1)[:20] + "G" + card(1)[21:],  # not hex
        card(1)[:8] + "-" + card(1)[9:],  # middle not alphanumeric
        card(1)[:6] + "D15600000é" + card(1)[16:],  # non-ASCII
        "4401 0D156000005" + card(1)[16:],
        "44010AD156000005" + card(1)[16:],  # region not digits
    ]
    ids += [f"psam:{psam(i)}" for i in range(25)] + [f"psam:{psam(1, '449900')}"]
    ids += ["psam:", f"psam:{psam(1)}0", f"psam:{psam(1, '110101')}", f"psam:99{psam(1)[2:]}"]
    ids += [f"psam:{psam(3).lower()}", f"psam:{card(1)}"]
    return ids


@pytest.mark.parametrize("scope", ["44", "4401"])
def test_c_and_python_agree_on_every_id(
    reader: Path, world: World, tmp_path: Path, scope: str
) -> None:
    signer = "440000" if scope == "44" else "440100"
    f, _ = world.export(scope, signer)
    data = f.to_bytes()
    parsed = offline_read.parse(data)
    ids = corpus()
    for now in (T, T + DAY - 1, T + DAY, T + 2 * DAY):  # the last two: expired
        c_lines = run_c(reader, data, tmp_path, now, ids)
        py_lines = run_python(parsed, now, ids)
        assert len(c_lines) == len(ids)
        diff = [(i, c, p) for i, c, p in zip(ids, c_lines, py_lines, strict=True) if c != p]
        assert not diff, diff[:5]
    verdicts = {line.split()[0] for line in run_python(parsed, T, ids)}
    assert verdicts == {"NOT_REVOKED", "MAYBE_REVOKED", "OUT_OF_SCOPE", "MALFORMED"}
    assert {line.split()[0] for line in run_python(parsed, T + DAY, ids)} == {
        "EXPIRED",
        "MALFORMED",
    }


def test_c_reader_reports_the_header(reader: Path, world: World, tmp_path: Path) -> None:
    f, _ = world.export()
    path = tmp_path / "44.filter"
    path.write_bytes(f.to_bytes())
    out = subprocess.run([reader, "info", path], capture_output=True, check=True, text=True)
    info = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert info["scope"] == "44"
    assert info["expires_at"] == str(T + DAY)
    assert info["signer"] == "440000"
    assert info["header_sha256"] == f.digest.hex()  # Ed25519: the digest it signs
    assert info["partitions"] == str(len(f.partitions))


def _refused(reader: Path, data: bytes, tmp: Path) -> str:
    path = tmp / "bad.filter"
    path.write_bytes(data)
    out = subprocess.run([reader, "check", path, str(T)], input=b"", capture_output=True)
    assert out.returncode == 2, out
    return out.stderr.decode()


def test_both_readers_refuse_a_damaged_file(reader: Path, world: World, tmp_path: Path) -> None:
    data = bytearray(world.export()[0].to_bytes())
    for where in (10, len(data) // 2, len(data) - 40, len(data) - 1):
        bad = bytearray(data)
        bad[where] ^= 0x01
        assert "damaged" in _refused(reader, bytes(bad), tmp_path)
        with pytest.raises(offline.FilterIntegrityError):
            offline_read.parse(bytes(bad))
    assert "trailer" in _refused(reader, bytes(data[:-1]), tmp_path)
    assert "trailer" in _refused(reader, b"", tmp_path)


def test_c_reader_refuses_an_update_until_it_is_applied(
    reader: Path, world: World, tmp_path: Path
) -> None:
    old, _ = world.export()
    world.clock.advance(60)
    world.publish("440300", [card(9000, "440304")])
    new, built = world.export(previous=offline_read.parse(old.to_bytes()))
    assert built.rebuilt == ("440300",)
    update = export.update_bytes(new, old)
    assert "update" in _refused(reader, update, tmp_path)
    applied = offline_read.parse(update, previous=old)
    full = applied.to_bytes()
    assert full == new.to_bytes()
    lines = run_c(reader, full, tmp_path, T + 60, [card(9000, "440304")])
    assert lines[0].startswith("MAYBE_REVOKED 440300")


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reader built with AddressSanitizer and UBSan: any out-of-bounds read, overflow or
    undefined shift aborts it."""
    cc = shutil.which("cc")
    assert cc is not None
    out = tmp_path_factory.mktemp("asan") / "offline_filter"
    flags = ["-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover"]
    subprocess.run([cc, *flags, "-o", out, SOURCE], check=True)
    return out


def _resealed(body: bytes) -> bytes:
    """``body`` with a valid SHA-256 trailer, so that the parser goes past the trailer check
    and meets the damage itself."""
    return body + hashlib.sha256(body).digest()


def test_mutated_files_with_valid_trailers_are_refused_alike_and_safely(
    sanitized: Path, world: World, tmp_path: Path
) -> None:
    """Bit flips, truncations and extensions anywhere in a file whose trailer is then made to
    match: the C reader (under ASan/UBSan) and the Python reader accept or refuse each one
    alike, and the C reader never crashes."""
    f, _ = world.export("4401", "440100")
    data = f.to_bytes()[: -offline.TRAILER_LENGTH]
    header = len(f.header)
    rng = random.Random(1616)
    cases = [data[:cut] for cut in range(0, header + 40, 7)]
    cases += [data + b"\x00", data + b"\x01" * 5]
    for _ in range(150):
        bad = bytearray(data)
        where = rng.randrange(header + 64) if rng.random() < 0.8 else rng.randrange(len(bad))
        bad[where] ^= 1 << rng.randrange(8)
        cases.append(bytes(bad))
    accepted = 0
    for i, case in enumerate(cases):
        path = tmp_path / f"m{i}.filter"
        path.write_bytes(_resealed(case))
        run = subprocess.run(
            [sanitized, "check", path, str(T)], input=card(1).encode() + b"\n",
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert run.returncode in (0, 2), (i, run.returncode, run.stderr[-2000:])
        try:
            parsed = offline_read.parse(_resealed(case))
        except offline.FilterError:
            assert run.returncode == 2, (i, run.stdout)
            continue
        assert run.returncode == 0, (i, run.stderr)
        accepted += 1
        py = run_python(parsed, T, [card(1)])
        assert run.stdout.decode().splitlines() == py, i
    # Flips inside fingerprints or the statement leave a parseable file (integrity is the
    # signature's job there); most of the header's flips do not.
    assert 0 < accepted < len(cases)


# ---------------------------------------------------------------------------- authenticity
def _c_verdict(reader: Path, data: bytes, tmp: Path, root: bytes, now: int = T) -> tuple[int, str]:
    path = tmp / "auth.filter"
    path.write_bytes(data)
    run = subprocess.run(
        [reader, "check", path, str(now), root.hex()],
        input=card(1).encode() + b"\n",
        capture_output=True,
        timeout=60,
    )
    assert run.returncode in (0, 2), run.stderr[-2000:]
    return run.returncode, run.stderr.decode()


def _py_accepts(data: bytes, anchor: TrustAnchor, now: int = T) -> bool:
    try:
        offline_read.verify(data, anchor, now=now)
    except offline.FilterError:
        return False
    return True


def _signed(world: World, key: SigningKey, chain: list[Certificate], scope: str) -> bytes:
    sources = export.sources_from_store(world.store, scope, {})
    parts = export.build_partitions(sources).partitions
    return export.sign_filter(key, chain, scope, T, T + DAY, parts).to_bytes()


def test_c_reader_verifies_the_signature_and_chain_as_python_does(
    reader: Path, world: World, tmp_path: Path
) -> None:
    """With the pinned root's public key, the C reader checks the Ed25519 chain and signature
    (RFC 8032 in plain C) and accepts or refuses exactly the files the Python reader does."""
    root = ROOT.public
    good = {
        "province signs 44": world.export("44", "440000")[0].to_bytes(),
        "province signs 4401": world.export("4401", "440000")[0].to_bytes(),
        "city signs 4401": world.export("4401", "440100")[0].to_bytes(),
        "root signs 44": _signed(world, ROOT, [], "44"),
        "province's own rotation": _signed(
            world, GD2, [issue_certificate(ROOT, GD2, ["44"], T - DAY, T + DAY, serial=30)], "44"
        ),
        "a chain in the binary layout of issue #5": _signed(
            world,
            GZ,
            [BIN_GD, issue_certificate(GD, GZ, ["4401"], T - DAY, T + DAY, 36, form="binary")],
            "4401",
        ),
    }
    f = world.export()[0]
    sig = bytearray(f.signature)
    sig[5] ^= 0x10
    bad = {
        "forged signature": dataclasses.replace(f, signature=bytes(64)).to_bytes(),
        "one bit of the signature": dataclasses.replace(f, signature=bytes(sig)).to_bytes(),
        "widened expiry": dataclasses.replace(f, expires_at=f.expires_at + DAY).to_bytes(),
        "city signs 44": world.export("44", "440100")[0].to_bytes(),
        "city signs 4403": world.export("4403", "440100")[0].to_bytes(),
        "chain of another key": dataclasses.replace(
            f, chain=tuple(c.to_bytes() for c in CHAINS["440100"])
        ).to_bytes(),
        "no chain": dataclasses.replace(f, chain=()).to_bytes(),
        "a second publisher for 44": _signed(
            world, SZ, [GD_CERT, issue_certificate(GD, SZ, ["44"], T - DAY, T + DAY, 31)], "44"
        ),
        "expired certificate": _signed(
            world, GD, [issue_certificate(ROOT, GD, ["44"], T - DAY, T - 1, serial=32)], "44"
        ),
        "binary chain, a second publisher for 44": _signed(
            world,
            SZ,
            [BIN_GD, issue_certificate(GD, SZ, ["44"], T - DAY, T + DAY, 37, form="binary")],
            "44",
        ),
        "not yet valid": _signed(
            world, GD, [issue_certificate(ROOT, GD, ["44"], T + 1, T + DAY, serial=33)], "44"
        ),
    }
    for name, data in good.items():
        assert _py_accepts(data, ANCHOR), name
        code, err = _c_verdict(reader, data, tmp_path, root)
        assert code == 0, (name, err)
    for name, data in bad.items():
        assert not _py_accepts(data, ANCHOR), name
        code, err = _c_verdict(reader, data, tmp_path, root)
        assert code == 2 and "not authentic" in err, (name, err)
    other = SigningKey.generate("000000", [""]).public
    assert _c_verdict(reader, good["province signs 44"], tmp_path, other)[0] == 2


def test_c_reader_refuses_a_certificate_expired_by_now(
    reader: Path, world: World, tmp_path: Path
) -> None:
    short = issue_certificate(ROOT, GD, ["44"], T - DAY, T + 10, serial=34)
    data = _signed(world, GD, [short], "44")
    for now, ok in ((T + 10, True), (T + 11, False)):
        assert _py_accepts(data, ANCHOR, now) is ok
        assert (_c_verdict(reader, data, tmp_path, ROOT.public, now)[0] == 0) is ok


def test_c_reader_verifies_ed25519_only(reader: Path, world: World, tmp_path: Path) -> None:
    """An SM2-signed filter verifies in Python (SM3 digest, Tongsuo); the C reader says it
    checks Ed25519 only, and still reads the file's integrity without the root."""
    gd = SigningKey.generate("440000", ["4499"], "sm2-sm3")
    data = _signed(world, gd, [issue_certificate(ROOT, gd, ["44"], T - DAY, T + DAY, 35)], "44")
    assert _py_accepts(data, ANCHOR)
    code, err = _c_verdict(reader, data, tmp_path, ROOT.public)
    assert code == 2 and "Ed25519 only" in err
    assert run_c(reader, data, tmp_path, T, [card(500)])[0].startswith("MAYBE_REVOKED")


def test_mutated_chains_and_signatures_are_refused_alike_and_safely(
    sanitized: Path, world: World, tmp_path: Path
) -> None:
    """Flips in the chain and signature (trailer resealed), verified with the pinned root:
    the sanitized C reader and the Python reader agree on every one, and never crash."""
    f, _ = world.export("4401", "440100")
    data = f.to_bytes()[: -offline.TRAILER_LENGTH]
    start, end = len(f.header), len(f.header) + 1 + sum(4 + len(c) for c in f.chain) + 65
    rng = random.Random(1617)
    for i in range(60):
        bad = bytearray(data)
        bad[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
        sealed = _resealed(bytes(bad))
        code, err = _c_verdict(sanitized, sealed, tmp_path, ROOT.public)
        assert (code == 0) is _py_accepts(sealed, ANCHOR), (i, err)
