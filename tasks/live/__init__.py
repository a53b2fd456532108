"""The live path: how a stored status change reaches every browser that watches it.

One update, in the order it travels (``docs/architecture.md``):

- ``wire``: the wire format, and the only place it exists. A task row (or its
  document) becomes an ``Update`` here: a routing header line and the exact
  WebSocket frame. Parsing, the frame bytes and conflation live beside it.
- ``broadcast``: publishes each change once (one Redis ``PUBLISH``, or the
  in-process hand-off the hub registers in the embedded default).
- ``hub``: the process's one subscription, its routing index, gap repair and
  shutdown. It reads rows through ``tasks.selectors`` and encodes them through
  ``wire``.
- ``delivery``: one client's socket. Everything that reaches into daphne's,
  Twisted's or autobahn's private state is in that one file.
- ``routes``: the names updates travel on (the Redis channel, the route keys).

The WebSocket consumer (``tasks.consumers``) is the protocol adapter in front
of all this; the tracker (``tasks.tracker``) is the one writer behind it.
Nothing here imports the consumer or the tracker.
"""
