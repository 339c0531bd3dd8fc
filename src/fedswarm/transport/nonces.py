"""A replay cache: the nonces each sender used recently.

A message is accepted only if its timestamp is within ``max_skew`` of the receiver's clock, so a nonce
needs remembering only until its message's timestamp has aged past that window; the cache keeps each
nonce until ``timestamp + window`` and prunes lazily. Memory is bounded by the senders' message rate
times the window; ``max_per_sender`` caps it against a member flooding fresh nonces.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

__all__ = ["NonceCache"]


class NonceCache:
    """Remembers ``(sender, nonce)`` pairs for ``window`` seconds past their message timestamps."""

    def __init__(
        self, *, window: float, clock: Callable[[], float] = time.time, max_per_sender: int = 1_000_000
    ) -> None:
        self.window = float(window)
        self._clock = clock
        self._max = max_per_sender
        self._seen: dict[str, dict[bytes, float]] = {}
        self._expiry: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()

    def add(self, sender: str, nonce: bytes, *, timestamp: float) -> bool:
        """Record the nonce; ``False`` if it was already recorded (a replay) or the sender is flooding."""
        with self._lock:
            self._prune(self._clock())
            seen = self._seen.setdefault(sender, {})
            if nonce in seen or len(seen) >= self._max:
                return False
            until = max(timestamp, self._clock()) + self.window
            seen[nonce] = until
            heapq.heappush(self._expiry, (until, sender, nonce))
            return True

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._seen.values())

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            until, sender, nonce = heapq.heappop(self._expiry)
            seen = self._seen.get(sender)
            if seen is not None and seen.get(nonce) == until:
                del seen[nonce]
                if not seen:
                    del self._seen[sender]
