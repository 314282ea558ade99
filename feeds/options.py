"""Venue tunables from ``config.options``: which names exist and which values they accept.

A feed's options are its public plain class attributes (numbers, strings, booleans, None), so a
venue module declares a knob once, with its default, and configuration can override it by name.
Checked at construction so a typo or a ``nan`` fails start-up instead of stalling a timer later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def option_names(cls: type) -> set[str]:
    """The plain (non-callable, public) class attributes of ``cls`` and its bases."""
    names = set()
    for klass in cls.__mro__:
        for key, value in vars(klass).items():
            if not key.startswith("_") and isinstance(value, (int, float, str, bool, type(None))):
                names.add(key)
    return names


def option_problem(cls: type, name: str, value: object) -> str | None:
    """Why ``value`` cannot set option ``name`` of ``cls`` (None when it can).

    Options are timers, rates and limits: a number must be a finite, non-negative number of the
    default's kind (TOML spells ``nan`` and ``inf``, which would pass every range check and then
    stall or spin a timer); other options keep their type.
    """
    default = getattr(cls, name)
    expected = f"must be {type(default).__name__}, got {value!r}"
    if isinstance(default, bool) or isinstance(value, bool):
        return None if type(value) is type(default) else expected
    if default is None or isinstance(default, (int, float)):
        if value is None and default is None:
            return None
        wants_int = isinstance(default, int)
        if not isinstance(value, int if wants_int else (int, float)):
            return f"must be {'an integer' if wants_int else 'a number'}, got {value!r}"
        if not math.isfinite(value) or value < 0:
            return f"must be a finite number >= 0, got {value!r}"
        return None
    return None if isinstance(value, type(default)) else expected


def apply_options(feed: object, venue: str, options: Mapping[str, object]) -> None:
    """Set each option on ``feed`` after checking it with the feed class's own rules."""
    cls = type(feed)
    known = cls.option_names()  # type: ignore[attr-defined]
    for key, value in options.items():
        if key not in known:
            raise ValueError(f"venues.{venue}.options: unknown option {key!r}; "
                             f"known: {', '.join(sorted(known))}")
        problem = cls.option_problem(key, value)  # type: ignore[attr-defined]
        if problem:
            raise ValueError(f"venues.{venue}.options.{key}: {problem}")
        setattr(feed, key, value)
