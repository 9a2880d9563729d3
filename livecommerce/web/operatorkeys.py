"""Operator API keys: the role that may read and erase a viewer's personal data.

A host key (``lch_``) acts on its host's shows and products; a privacy request (a viewer asking
what the service holds about them, or to be forgotten) is about one *viewer* across every host's
shows, so it needs a role of its own: ``lco_`` + 32 random bytes, stored only as their SHA-256
in ``keys.operator_keys``, exactly like host keys (:mod:`livecommerce.web.hostkeys`). The record's
``host`` field holds the operator's name. Each role refuses the other's keys (and viewer
tokens) before any lookup, because the prefix is checked first.

Keys are created and revoked with ``livecommerce privacy key {create,list,revoke}``.
"""

from __future__ import annotations

from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys

OPERATOR_PREFIX = "lco_"


class OperatorKeys(HostKeys):
    """Create, verify, list and revoke operator keys (records shaped like host keys)."""

    secret_prefix = OPERATOR_PREFIX
    kind = "operator API key"

    @staticmethod
    def hash_key(keyspace: Keyspace) -> str:
        return keyspace.operator_keys
