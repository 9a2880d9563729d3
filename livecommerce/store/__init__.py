"""The store: every Redis key (``keys``), the Lua scripts (``lua/``) and their runner, the
inventory (reserve, confirm, cancel, buy-now, restock, close, windows: each one atomic script that
also appends to the outbox), the inventory audit, durability (WAITAOF), and the embedded Valkey.

May import: ``core``. Never imports realtime, fulfillment, web or ops.
"""
