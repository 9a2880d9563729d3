"""The web side for hosts: the host API (route table in ``hostapi``, handlers per resource in
``api_*``, request context in ``operation``), its OpenAPI document, RFC 9457 problems, host keys,
the product catalog, and the pages (control panel, viewer page) with their ``static/`` assets.

May import: ``core``, ``store``, ``realtime``, ``fulfillment``. Never imports ops.
"""
