"""The decision record (`pulse.decision/1`): its shape, and the one place it is assembled.

Every decision Pulse emits is built complete here, audit included, and nothing changes it afterwards: the
engine calls `personalized`, `non_personalized` or `forgotten`, the win-back check calls `personalized`
with a `trigger`. Keys come in the order `Decision` declares them (orjson writes a dict in insertion order,
so the JSON of a decision is fixed by this module); tests/test_decision.py checks every kind against it.
The JSON is described in schemas/decision.schema.json and docs/contracts.md.

The types are TypedDicts: plain dicts at run time, so the hot path pays nothing for them.

>>> head = header("e-1", "u-1", "page_view", event_ts=1_000, ingest_ts=1_002, decided_ts=1_003)
>>> gone = forgotten(head)
>>> list(gone)[9:]
['personalized', 'forgotten', 'recommendations', 'action', 'model_versions', 'features', 'experiment', 'audit']
>>> gone["decision_id"], gone["latency_ms"], gone["audit"]["basis"]
('d-e-1', {'event_to_ingest': 2, 'ingest_to_decision': 1}, 'erasure request')
"""

from typing import Any, NotRequired, TypedDict

from operators.audit import Audit, erasure_audit, personalized_audit, popularity_audit

DECISION_SCHEMA = "pulse.decision/1"


class Explanation(TypedDict):
    """A model output's exact explanation: `intercept + sum(contributions) == score` (a logit)."""

    intercept: float
    contributions: dict[str, float]
    score: float


class Latency(TypedDict):
    """Per-stage latency in ms."""

    event_to_ingest: int
    ingest_to_decision: int


class RecommendationRecord(TypedDict):
    """One recommended item; its `components` sum to its `score` (`Recommendation.to_dict`)."""

    item_id: str
    category: str | None
    score: float
    components: dict[str, float]


class ChurnOutput(TypedDict):
    """The churn model's probability and its explanation."""

    probability: float
    explanation: Explanation


class MessageSentiment(TypedDict):
    """A chat message's sentiment in [-1, 1], its feedback label (if any) and its explanation."""

    score: float
    label: str | None
    explanation: Explanation


class SentimentOutput(TypedDict):
    """The user's recent sentiment (None before any chat) and this event's message's, if it is one."""

    recent: float | None
    message: MessageSentiment | None


class ActionRecord(TypedDict):
    """The chosen next-best action with its propensity; a win-back names its channel."""

    name: str
    propensity: float
    channel: NotRequired[str]
    reason: str
    observed_reward: NotRequired[float | None]


class ExperimentLabel(TypedDict):
    """The experiment and arm the user is in (`Experiment.label`)."""

    name: str
    arm: str


class Header(TypedDict):
    """What every decision starts with: its id, the event it answers and the timestamps."""

    schema: str
    decision_id: str
    user_id: str
    event_id: str
    event_type: str
    trigger: NotRequired[str]
    event_ts: int
    ingest_ts: int
    decided_ts: int
    latency_ms: Latency


class Decision(Header):
    """A whole decision, keys in the order they are written; the optional ones belong to some kinds only."""

    personalized: bool
    forgotten: NotRequired[bool]
    recommendations: list[RecommendationRecord]
    churn: NotRequired[ChurnOutput | None]
    sentiment: NotRequired[SentimentOutput | None]
    action: ActionRecord
    confidence: NotRequired[float]
    segment: NotRequired[int | None]
    rules: NotRequired[list[dict[str, Any]]]
    model_versions: dict[str, str]
    recommendation_weights: NotRequired[dict[str, float]]
    features: dict[str, Any]
    category_affinity: NotRequired[dict[str, float]]
    experiment: ExperimentLabel | None
    audit: Audit


def decision_id_for(event_id: str) -> str:
    """Deterministic decision id: replays of the same event produce the same id (idempotent writes)."""
    return f"d-{event_id}"


def header(event_id: str, user_id: str, event_type: str, event_ts: int, ingest_ts: int, decided_ts: int,
           trigger: str | None = None) -> Header:
    """The decision's header; `trigger` marks a decision the engine made on its own (no event: win-back)."""
    triggered = {} if trigger is None else {"trigger": trigger}
    return {  # type: ignore[typeddict-item]  # the spread adds `trigger` in its place, or nothing
        "schema": DECISION_SCHEMA, "decision_id": decision_id_for(event_id), "user_id": user_id,
        "event_id": event_id, "event_type": event_type, **triggered, "event_ts": event_ts, "ingest_ts": ingest_ts,
        "decided_ts": decided_ts,
        "latency_ms": {"event_to_ingest": ingest_ts - event_ts, "ingest_to_decision": decided_ts - ingest_ts},
    }


def personalized(
    head: Header, *, recommendations: list[RecommendationRecord], churn: ChurnOutput, sentiment: SentimentOutput,
    action: ActionRecord, confidence: float, segment: int | None, rules: list[dict[str, Any]],
    model_versions: dict[str, str], recommendation_weights: dict[str, float] | None, features: dict[str, Any],
    category_affinity: dict[str, float], experiment: ExperimentLabel,
) -> Decision:
    """A personalized decision (`recommendation_weights` None: left out, as on a win-back)."""
    weights = {} if recommendation_weights is None else {"recommendation_weights": recommendation_weights}
    return {  # type: ignore[typeddict-item]  # the spreads are a Header and the optional weights
        **head, "personalized": True, "recommendations": recommendations, "churn": churn, "sentiment": sentiment,
        "action": action, "confidence": confidence, "segment": segment, "rules": rules,
        "model_versions": model_versions, **weights, "features": features, "category_affinity": category_affinity,
        "experiment": experiment, "audit": personalized_audit(model_versions, sentiment["message"] is not None),
    }


def non_personalized(head: Header, *, recommendations: list[RecommendationRecord], reason: str,
                     model_versions: dict[str, str], experiment: ExperimentLabel | None) -> Decision:
    """A popularity-only decision: without consent (`experiment` None) or for a holdout arm's user."""
    return {  # type: ignore[typeddict-item]  # the spread is a Header
        **head, "personalized": False, "recommendations": recommendations, "churn": None, "sentiment": None,
        "action": {"name": "recommend", "propensity": 1.0, "reason": reason}, "model_versions": model_versions,
        "features": {}, "experiment": experiment, "audit": popularity_audit(model_versions, experiment),
    }


def forgotten(head: Header) -> Decision:
    """The decision answering `forget_user`: nothing of the user is used or kept."""
    return {  # type: ignore[typeddict-item]  # the spread is a Header
        **head, "personalized": False, "forgotten": True, "recommendations": [],
        "action": {"name": "forget", "propensity": 1.0, "reason": "forget_user: profile and stored decision erased"},
        "model_versions": {}, "features": {}, "experiment": None, "audit": erasure_audit(),
    }
