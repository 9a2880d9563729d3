"""Real time: the viewer WebSocket. ``protocol`` is the sans-I/O session (what a frame means,
which reply to send), ``codec`` the JSON/msgpack wire formats, ``hub``/``broker``/``outbox`` the
fan-out of a show's events, ``gateway`` the thin endpoint around them, ``tokens`` the signed
viewer tokens, ``client`` the async client library.

May import: ``core``, ``store``. Never imports fulfillment, web or ops.
"""
