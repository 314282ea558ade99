"""Canonical decimal text against Decimal, the reference model of what the venue text means."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggbook.book.canonical import CanonicalText, canonical

digits = st.text("0123456789", min_size=0, max_size=20)


@st.composite
def venue_text(draw: st.DrawFn) -> str:
    """Decimal text as venues write it: padded zeros, a bare point, or an exponent."""
    whole, frac = draw(digits), draw(digits)
    if not whole and not frac:
        whole = "0"
    kind = draw(st.sampled_from(["int", "point", "frac", "exp"]))
    if kind == "int":
        text = whole or "0"
    elif kind == "point":
        text = (whole or "0") + "."
    else:
        text = f"{whole}.{frac}" if frac else f"{whole or '0'}.0"
    if kind == "exp":
        exp = draw(st.integers(-30, 30))
        sign = draw(st.sampled_from(["", "+"])) if exp >= 0 else ""
        text += draw(st.sampled_from(["e", "E"])) + sign + str(exp)
    return text


def plain_shape(text: str) -> bool:
    """No exponent, no sign, no leading zeros, no trailing zeros or point after the decimal point."""
    if not text or any(c not in "0123456789." for c in text) or text.count(".") > 1:
        return False
    whole, _, frac = text.partition(".")
    if not whole or (len(whole) > 1 and whole[0] == "0"):
        return False
    return "." not in text or (frac != "" and not frac.endswith("0"))


@given(venue_text())
def test_canonical_text_is_the_same_number_in_plain_shape(text: str) -> None:
    out = canonical(text)
    assert Decimal(out) == Decimal(text)
    assert plain_shape(out), out
    assert canonical(out) == out


@given(venue_text(), venue_text())
def test_equal_numbers_have_one_spelling(a: str, b: str) -> None:
    assert (canonical(a) == canonical(b)) == (Decimal(a) == Decimal(b))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("93179.700000000000000000", "93179.7"),
        ("0.000045596321060336", "0.000045596321060336"),
        ("1E-8", "0.00000001"),
        ("1.50e+3", "1500"),
        ("100.0", "100"),
        ("100.", "100"),
        (".5", "0.5"),
        ("007.10", "7.1"),
        ("0.00000000", "0"),
        ("0E-8", "0"),
    ],
)
def test_examples(text: str, expected: str) -> None:
    assert canonical(text) == expected


def test_not_a_number_is_refused() -> None:
    for bad in ("abc", "NaN", "Infinity", ""):
        with pytest.raises(ValueError):
            canonical(bad)


def test_cache_converts_each_spelling_once() -> None:
    text = CanonicalText()
    assert text("100.00") == "100" and text("100.00") == "100" and len(text) == 1
    assert text.level(("0.50", "1E+1")) == ("0.5", "10") and text.level(None) is None
