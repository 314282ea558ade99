"""Canonical decimal text: one spelling per number, whichever venue wrote it.

Why: venues spell the same number differently (Binance ``"142.31300000"``, MEXC ``"142.313"``,
NHEX ``"93179.700000000000000000"``, and exponent forms such as ``"1E-8"`` are legal JSON
numbers-as-text).  A single venue's book keeps its venue's exact text, but anything that merges
venues (the consolidated quote, the merged ladder, sweeps) must show one price as one string, or
a client comparing or keying by text sees two levels where there is one.  The canonical form is
the plain decimal: no exponent, no sign, no leading zeros before the point beyond a single ``0``,
no trailing zeros after it and no trailing point (``"100.0"`` -> ``"100"``, ``".5"`` ->
``"0.5"``, ``"1E-8"`` -> ``"0.00000001"``).  It parses to the same :class:`~decimal.Decimal` as
the venue's text.

:class:`CanonicalText` caches the conversion: the consolidated book looks up each level's text
once per distinct spelling, so the hot path costs one dict lookup.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, InvalidOperation

_CTX = Context(prec=80)  # wide enough that normalising a venue's number never rounds
_PLAIN = re.compile(r"([0-9]*)(?:\.([0-9]*))?", re.ASCII)  # what venues write: no exponent, no sign
_CACHE_LIMIT = 100_000


def canonical(text: str) -> str:
    """The plain decimal text of ``text`` with no exponent and no redundant zeros."""
    plain = _PLAIN.fullmatch(text)
    if plain is not None and (plain.group(1) or plain.group(2)):
        whole = plain.group(1).lstrip("0") or "0"
        frac = (plain.group(2) or "").rstrip("0")
        return f"{whole}.{frac}" if frac else whole
    try:  # exponent form or anything unusual: Decimal decides
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite decimal number: {text!r}")
    if value.is_zero():
        return "0"
    return format(value.normalize(_CTX), "f")


class CanonicalText:
    """A bounded cache of :func:`canonical`, one per consolidated book (so per symbol)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        out = self._cache.get(text)
        if out is None:
            out = canonical(text)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = out
        return out

    def level(self, level: tuple[str, str] | None) -> tuple[str, str] | None:
        """A ``(price, size)`` pair in canonical text (``None`` stays ``None``)."""
        if level is None:
            return None
        return self(level[0]), self(level[1])

    def __len__(self) -> int:
        return len(self._cache)
