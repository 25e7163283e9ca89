"""probe(): the C fast path and the pure-Python fallback must agree bit for bit.

A disagreement would make a card revoked on one machine (compiler present) and valid on
another (fallback), so every property runs both and compares view, canonical bytes, hash
and, for malformed ids, the exact CardIdError message.
"""

from __future__ import annotations

import contextlib
import gc
import string
import subprocess
import sys

import pytest
import xxhash
from hypothesis import example, given
from hypothesis import strategies as st

from blacklist.cardid import canonical_bytes, diagnose
from blacklist.errors import CardIdError
from blacklist.fastpath import _PROVINCES, HAVE_SPEEDUPS, probe, python_probe
from blacklist.regions import PROVINCE_PREFIXES

needs_speedups = pytest.mark.skipif(
    not HAVE_SPEEDUPS,
    reason="blacklist._speedups is not compiled (optional build failed or skipped); "
    "probe() is the pure-Python fallback, so there is no C path to compare",
)

ALNUM = string.ascii_letters + string.digits
HEX = string.hexdigits  # 0-9a-fA-F
BAD_PROVINCES = sorted(set(range(100)) - PROVINCE_PREFIXES)


@st.composite
def valid_ids(draw: st.DrawFn) -> str:
    province = draw(st.sampled_from(sorted(PROVINCE_PREFIXES)))
    rest = draw(st.text(string.digits, min_size=4, max_size=4))
    middle = draw(st.text(ALNUM, min_size=10, max_size=10))
    serial = draw(st.text(HEX, min_size=16, max_size=16))
    return f"{province:02d}{rest}{middle}{serial}"


def _replace(card_id: str, index: int, char: str) -> str:
    return card_id[:index] + char + card_id[index + 1 :]


@st.composite
def invalid_ids(draw: st.DrawFn) -> object:
    """A valid id broken in exactly one way, or something that is not a string at all."""
    base = draw(valid_ids())
    kind = draw(
        st.sampled_from(
            [
                "length",
                "non_ascii",
                "whitespace",
                "province",
                "region",
                "middle",
                "serial",
                "not_str",
            ]
        )
    )
    if kind == "length":
        n = draw(st.integers(0, 40).filter(lambda n: n != 32))
        return (base * 2)[:n]
    if kind == "non_ascii":
        # Includes look-alikes that str.isdigit/isalnum accept: fullwidth and Arabic-Indic
        # digits, accented letters.
        char = draw(st.sampled_from("１٣éßΩ\x80\xff€中") | st.characters(min_codepoint=128))
        return _replace(base, draw(st.integers(0, 31)), char)
    if kind == "whitespace":
        char = draw(st.sampled_from(" \t\n\r\x0b\x0c\u3000"))
        if draw(st.booleans()):
            return base + char  # e.g. a trailing newline from a card reader
        return _replace(base, draw(st.integers(0, 31)), char)
    if kind == "province":
        return f"{draw(st.sampled_from(BAD_PROVINCES)):02d}{base[2:]}"
    if kind == "region":
        char = draw(st.sampled_from(string.ascii_letters + string.punctuation))
        return _replace(base, draw(st.integers(0, 5)), char)
    if kind == "middle":
        char = draw(st.sampled_from(string.punctuation))
        return _replace(base, draw(st.integers(6, 15)), char)
    if kind == "serial":
        char = draw(st.sampled_from("GgHhZz" + string.punctuation))
        return _replace(base, draw(st.integers(16, 31)), char)
    return draw(
        st.sampled_from(
            [
                base.encode(),
                bytearray(base.encode()),
                None,
                0,
                12345678,
                1.5,
                [base],
                memoryview(b"x"),
            ]
        )
    )


def _views(card_id: str, present: bool) -> dict[bytes, object]:
    """A region → view dict that does or does not hold the id's region."""
    region = card_id[:6].encode()
    views: dict[bytes, object] = {b"110000": "beijing", b"440100": "guangzhou"}
    views.pop(region, None)
    if present:
        views[region] = object()
    return views


def _error_of(fn: object, value: object) -> CardIdError:
    with pytest.raises(CardIdError) as info:
        fn(value, {})  # type: ignore[operator]
    return info.value


EXTREMES = [
    "110000" + "0" * 26,
    "659999" + "Z" * 10 + "F" * 16,
    "659999" + "z" * 10 + "f" * 16,
    "440100D156000005" + "FFFFFFFFFFFFFFFF",
]


@given(valid_ids(), st.booleans())
@example(EXTREMES[0], True)
@example(EXTREMES[1], False)
@example(EXTREMES[2], True)
@example(EXTREMES[3], True)
def test_python_probe_on_valid_ids(card_id: str, present: bool) -> None:
    views = _views(card_id, present)
    view, canon, h = python_probe(card_id, views)
    assert canon == card_id.upper().encode("ascii") == canonical_bytes(card_id)
    assert h == xxhash.xxh64_intdigest(canon)
    assert view is views.get(canon[:6])
    assert (view is not None) == present


@needs_speedups
@given(valid_ids(), st.booleans())
@example(EXTREMES[0], True)
@example(EXTREMES[1], False)
@example(EXTREMES[2], True)
@example(EXTREMES[3], True)
def test_c_probe_matches_python_on_valid_ids(card_id: str, present: bool) -> None:
    views = _views(card_id, present)
    view, canon, h = probe(card_id, views)
    expected = python_probe(card_id, views)
    assert view is expected[0]
    assert canon == expected[1]
    assert type(canon) is bytes
    assert h == expected[2] == xxhash.xxh64_intdigest(canon)
    assert type(h) is int


@given(invalid_ids())
def test_invalid_ids_raise_the_diagnosis(value: object) -> None:
    expected = diagnose(value)
    for fn in (probe, python_probe):
        error = _error_of(fn, value)
        assert str(error) == str(expected)
        assert error.problem == expected.problem
        assert error.value is value


@given(st.text(max_size=40) | st.text("0123456789abcdefABCDEFGZz \n", min_size=30, max_size=34))
def test_arbitrary_text_agrees(value: str) -> None:
    """On any string both paths either return the same triple or raise the same message."""
    try:
        expected = python_probe(value, {})
    except CardIdError as e:
        assert str(_error_of(probe, value)) == str(e)
    else:
        assert probe(value, {}) == expected


def test_str_subclass_is_accepted() -> None:
    class Text(str):
        pass

    value = Text("440100d156000005" + "ab" * 8)
    assert probe(value, {}) == python_probe(value, {})


def test_province_table_comes_from_regions() -> None:
    assert len(_PROVINCES) == 100
    assert {i for i, flag in enumerate(_PROVINCES) if flag} == PROVINCE_PREFIXES


@needs_speedups
def test_c_province_table_is_the_only_province_rule() -> None:
    from blacklist import _speedups

    card_id = "990000D156000005" + "0" * 16  # 99 is not a province
    with pytest.raises(ValueError):
        _speedups.probe(card_id, {}, _PROVINCES)
    allow_all = bytes([1]) * 100
    assert _speedups.probe(card_id, {}, allow_all)[1] == card_id.encode()
    allow_none = bytes(100)
    with pytest.raises(ValueError):
        _speedups.probe("110000D156000005" + "0" * 16, {}, allow_none)


@needs_speedups
def test_c_probe_raises_bare_value_error_and_type_errors() -> None:
    from blacklist import _speedups

    with pytest.raises(ValueError) as info:
        _speedups.probe("bad", {}, _PROVINCES)
    assert not isinstance(info.value, CardIdError)  # the wrapper adds the explanation
    good = "440100D156000005" + "0" * 16
    with pytest.raises(TypeError):
        _speedups.probe(good, [], _PROVINCES)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.probe(good, {}, _PROVINCES[:99])
    with pytest.raises(TypeError):
        _speedups.probe(good, {}, bytearray(_PROVINCES))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.probe(good, {})  # type: ignore[call-arg]


@needs_speedups
def test_c_probe_lookup_errors_propagate() -> None:
    """A key whose __eq__ raises during the dict lookup surfaces, as with dict.get."""

    class Boom(bytes):
        def __hash__(self) -> int:
            return hash(b"440100")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

    views: dict[bytes, object] = {Boom(b"xxxxxx"): 1}
    with pytest.raises(RuntimeError, match="boom"):
        probe("440100D156000005" + "0" * 16, views)


@needs_speedups
def test_c_probe_does_not_leak_references() -> None:
    from blacklist import _speedups

    view = object()
    views: dict[bytes, object] = {b"440100": view}
    hit, miss = "440100D156000005" + "0" * 16, "110000D156000005" + "0" * 16

    def run(n: int) -> None:
        for _ in range(n):
            _speedups.probe(hit, views, _PROVINCES)
            _speedups.probe(miss, views, _PROVINCES)  # a miss returns None
            with contextlib.suppress(ValueError):
                _speedups.probe("bad", views, _PROVINCES)

    run(10)
    gc.collect()
    before = sys.getrefcount(view), sys.getrefcount(None)
    run(1000)
    gc.collect()
    after = sys.getrefcount(view), sys.getrefcount(None)
    assert after[0] == before[0]
    # None is immortal from 3.12 on; before that a leaked or stolen None shows up here.
    assert abs(after[1] - before[1]) < 10


def test_fallback_is_used_when_the_extension_is_missing() -> None:
    """A failed (optional) compile must leave a working probe, not an ImportError."""
    code = (
        "import sys; sys.modules['blacklist._speedups'] = None\n"
        "from blacklist import fastpath as p\n"
        "assert p.HAVE_SPEEDUPS is False and p.probe is p.python_probe\n"
        "print(p.probe('440100d156000005' + '0' * 16, {b'440100': 'gz'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    expected = (
        "gz",
        b"440100D156000005" + b"0" * 16,
        xxhash.xxh64_intdigest(b"440100D156000005" + b"0" * 16),
    )
    assert out.strip() == repr(expected)
