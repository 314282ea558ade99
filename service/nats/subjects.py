"""Every NATS subject and key-value key of the scale-out, named in one place (``docs/scale-out.md``).

Subjects (``P`` is ``[nats] prefix``, ``aggbook`` by default):

* ``P.quote.<SYMBOL>``: the consolidated quote, on every change;
* ``P.book.<SYMBOL>``: the merged book, top ``book_depth``, every ``book_interval`` while it changes;
* ``P.status.<VENUE>.<SYMBOL>``: a venue book's state transition;
* ``P.heartbeat.<K>``: shard ``K``'s heartbeat, with the symbols it owns.

Key-value bucket ``[nats] bucket``: ``quote.<SYMBOL>`` and ``book.<SYMBOL>`` hold the last message
published on the subject of the same name, so a gateway that joins late starts from a snapshot.
Canonical symbols (``BTC-USDT``) and venue names are valid subject tokens and key parts as they are.
"""

from __future__ import annotations

QUOTE = "quote"
BOOK = "book"
STATUS = "status"
HEARTBEAT = "heartbeat"
KINDS = (QUOTE, BOOK, STATUS, HEARTBEAT)


def quote(prefix: str, symbol: str) -> str:
    return f"{prefix}.{QUOTE}.{symbol}"


def book(prefix: str, symbol: str) -> str:
    return f"{prefix}.{BOOK}.{symbol}"


def status(prefix: str, venue: str, symbol: str) -> str:
    return f"{prefix}.{STATUS}.{venue}.{symbol}"


def heartbeat(prefix: str, index: int) -> str:
    return f"{prefix}.{HEARTBEAT}.{index}"


def everything(prefix: str) -> str:
    """The one wildcard a gateway subscribes to."""
    return f"{prefix}.>"


def kv_key(kind: str, symbol: str) -> str:
    return f"{kind}.{symbol}"


def kv_subject(bucket: str, key: str) -> str:
    """Where a plain publish stores ``key`` in the bucket: the stream behind a bucket captures it."""
    return f"$KV.{bucket}.{key}"
