"""Fulfillment: the relay that takes confirmed orders from the outbox streams (consumer group)
to the backend as signed webhooks, its retry policy, delivery transport and metrics, the dead
letters, the fulfillment audit, and the reference receiving service (``sink``).

May import: ``core``, ``store``. Never imports realtime, web or ops.
"""
