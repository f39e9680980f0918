"""Pulse simulator: synthetic users with known ground truth, event generation and load production."""

from simulator.contract import MAX_PAYLOAD_BYTES, TOPIC_BY_TYPE
from simulator.events import SimEvent, encode_event, restamp
from simulator.generator import EventGenerator
from simulator.latency import DecisionLatencyMonitor, LatencyStats
from simulator.malformed import MALFORMED_KINDS
from simulator.producer import SendReport, send_events
from simulator.sinks import EventSink, JsonLinesSink, KafkaEventSink
from simulator.world import Item, SimulationConfig, UserProfile, World, churn_risk

__all__ = [
    "MALFORMED_KINDS",
    "MAX_PAYLOAD_BYTES",
    "TOPIC_BY_TYPE",
    "DecisionLatencyMonitor",
    "EventGenerator",
    "EventSink",
    "Item",
    "JsonLinesSink",
    "KafkaEventSink",
    "LatencyStats",
    "SendReport",
    "SimEvent",
    "SimulationConfig",
    "UserProfile",
    "World",
    "churn_risk",
    "encode_event",
    "restamp",
    "send_events",
]
