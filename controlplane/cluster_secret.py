"""A Ray-deployed group's cluster secret: peer RPC is authenticated with it by default. It is
made once, at the group's first deploy (or by its first replica), and kept in Ray's GCS
key-value store, where every replica of the group finds it, on any station, after restarts
and replacements alike: no operator copies it, and it is never printed or put in statistics.
(A standalone node takes its secret from CLUSTER_TOKEN or CLUSTER_TOKEN_FILE instead.)"""

from __future__ import annotations

import secrets

from ray.experimental import internal_kv

KV_NAMESPACE = "uav-control-plane-secrets"


def group_secret(group: str) -> str:
    """The group's secret, made now if the group has none (the first writer wins: every
    caller, however concurrent, reads back the same one)."""
    key = f"cluster-token/{group}"
    internal_kv._internal_kv_put(key, secrets.token_urlsafe(32), overwrite=False, namespace=KV_NAMESPACE)
    value = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
    if not value:
        raise RuntimeError(f"no cluster secret for group {group!r} in Ray's key-value store")
    return value.decode() if isinstance(value, bytes) else str(value)
