from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RPCConfig:
    """How replicas call each other. Frozen and validated; the token never shows in repr."""

    timeout: float = 2.0  # seconds per attempt
    max_retries: int = 3  # attempts after the first
    retry_delay: float = 0.1  # seconds before the first retry
    retry_backoff: float = 2.0  # multiplier per further retry
    jitter: float = 0.2  # +-fraction of each delay, so peers do not retry in lockstep
    max_retry_delay: float = 2.0
    pool_size: int = 32  # keep-alive connections per client session
    cluster_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("timeout", "retry_delay", "retry_backoff", "max_retry_delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"RPCConfig.{name} must be a positive number, got {value!r}")
        if self.retry_backoff < 1:
            raise ValueError(f"RPCConfig.retry_backoff must be >= 1, got {self.retry_backoff}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"RPCConfig.max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"RPCConfig.jitter must be in [0, 1), got {self.jitter}")
        if not isinstance(self.pool_size, int) or self.pool_size < 1:
            raise ValueError(f"RPCConfig.pool_size must be a positive integer, got {self.pool_size!r}")
        if self.cluster_token is not None and len(self.cluster_token) < 16:
            raise ValueError("RPCConfig.cluster_token must be at least 16 characters")

    def delay_before(self, retry: int, random_unit: float) -> float:
        """Seconds to wait before retry number `retry` (1-based); random_unit in [0, 1)."""
        base = min(self.retry_delay * self.retry_backoff ** (retry - 1), self.max_retry_delay)
        return base * (1 + self.jitter * (2 * random_unit - 1))
