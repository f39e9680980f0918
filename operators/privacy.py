"""Privacy (GDPR/RODO) helpers: pseudonymous user ids.

With `PULSE_PSEUDONYMIZE_KEY` set, the dataflow replaces every valid event's `user_id` by a keyed hash
right after validation, before the event reaches any state: Bytewax state keys, model latents, Redis
keys and channels, the decision and outcome logs all hold the pseudonym only. Without the key the
pseudonym cannot be computed or reversed; with it, `pseudonymize` maps a known user id (e.g. for a
WebSocket subscription or a data-subject request) to the id Pulse stores.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from operators.parse import Accepted

PSEUDONYM_PREFIX = "p-"


def pseudonymize(user_id: str, key: str) -> str:
    """HMAC-SHA256 of the user id under `key`, as `p-` + 32 hex digits (128 bits).

    >>> pseudonymize("user-00017", "secret")
    'p-74c24873173473087f7d05da98125478'
    """
    digest = hmac.new(key.encode(), user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:32]


class Pseudonymizer:
    """Dataflow step: the accepted event with its `user_id` replaced by the pseudonym."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("a pseudonymization key must not be empty")
        self._key = key

    def __call__(self, accepted: Accepted) -> Accepted:
        """A copy of `accepted` whose event carries the pseudonymous user id."""
        event = {**accepted.event, "user_id": pseudonymize(accepted.event["user_id"], self._key)}
        return replace(accepted, event=event)
