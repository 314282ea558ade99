"""Scale-out over NATS: shards publish what they serve, gateways serve it again from NATS alone.

* ``settings.py``: the ``[nats]`` config table and the ``shard = "K/N"`` split of the symbols;
* ``subjects.py``: every subject and key-value key, in one place (``docs/scale-out.md``);
* ``publisher.py``: a serving process's publisher (quotes, books, venue states, heartbeats), fed by
  the aggregator like the WebSocket hub and never able to slow it;
* ``view.py``: a gateway's view of every shard, built from the key-value snapshot and the
  subscriptions, which the unchanged HTTP handlers and WebSocket hub read through the same source
  interface as the local aggregator (``aggbook.service.source``);
* ``gateway.py``: ``aggbook gateway``, the HTTP and WebSocket front end over the view.

Importing this package does not import the NATS client: ``aggbook serve`` without ``[nats]``
never loads it.
"""
