"""RPC errors. Each also inherits Python's own exception where one fits (as aiohttp does),
so "retry by type" is an isinstance table and callers may catch TimeoutError/ConnectionError."""

from __future__ import annotations


class RPCError(Exception):
    """Base of every RPC failure."""

    retryable = True
    kind = "error"


class RPCTimeoutError(RPCError, TimeoutError):
    kind = "timeout"


class RPCConnectionError(RPCError, ConnectionError):
    kind = "connection"


class RPCServerError(RPCError):
    """The peer failed while handling the request (a 5xx): worth another try."""

    kind = "server"


class RPCRejectedError(RPCError):
    """The peer refused the request as invalid (a 4xx): retrying cannot help."""

    retryable = False
    kind = "rejected"


class RPCAuthError(RPCRejectedError):
    """The peer refused our cluster token."""

    kind = "auth"
