"""Running it: the ASGI app and its lifespan, the server runner (uvicorn, embedded Valkey, demo),
the scheduler, the demo show, and the ``livecommerce`` command line (``cli`` and ``cli_*``).

May import every other part; nothing imports it.
"""
