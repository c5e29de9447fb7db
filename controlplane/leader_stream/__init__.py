"""Clients talk to the leader directly: one WebSocket per process and replica, requests
pipelined on it (wire.py, server.py, connection.py)."""
