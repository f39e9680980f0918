"""The simulator speaks the engine's event contract: topic per type and the default size limit."""

from __future__ import annotations

from operators.contracts import TOPIC_KIND_OF_TYPE

CLICKSTREAM_TOPIC = "clickstream"
CHAT_TOPIC = "chat"
CONTROL_TOPIC = "control"
TOPIC_BY_TYPE: dict[str, str] = TOPIC_KIND_OF_TYPE
MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest event value (bytes) the engine accepts by default (PULSE_MAX_EVENT_BYTES)."""
