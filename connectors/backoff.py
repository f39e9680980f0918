"""Capped exponential backoff: the one waiting rule of every retry loop that talks to Kafka or Redis."""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Waits between attempts: `first`, then twice the previous one up to `cap`; `reset` after a success.

    >>> backoff = Backoff(0.5, cap=2.0)
    >>> [backoff.next() for _ in range(4)]
    [0.5, 1.0, 2.0, 2.0]
    >>> backoff.reset(); backoff.next()
    0.5
    """

    def __init__(self, first: float, cap: float) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"need 0 < first <= cap, got first={first}, cap={cap}")
        self.first, self.cap = first, cap
        self._delay = first

    def next(self) -> float:
        """The wait before the next attempt (each call doubles the one after, up to the cap)."""
        delay = self._delay
        self._delay = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        """Start again from `first` (after a success)."""
        self._delay = self.first
