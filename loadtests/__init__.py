"""The load-testing kit: a locustfile, the post-run audit, and helpers shared with
``scripts/spike.py``. See ``loadtests/README.md``."""
