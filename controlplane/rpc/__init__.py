"""Replica-to-replica RPC: errors, config, transports, the retrying client and its stats."""
