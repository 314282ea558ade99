"""Exception types of the book core.

Feeds catch :class:`BookError` around every decode-and-apply step: a bad level from
a venue becomes a counted resync, never a crash and never a half-applied book.
"""


class BookError(ValueError):
    """Base class of every error the book core raises on bad input."""


class InvalidLevel(BookError):
    """A price or size that is not a finite, non-negative decimal number (or a malformed level)."""

