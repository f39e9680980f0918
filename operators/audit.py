"""Auditable decisions: which models and which categories of personal data a decision used.

The record is derived from what the decision used, when operators.decision assembles it, so it cannot
disagree with what was decided; it is the decision's `audit` object (decision log, Redis, WebSocket).
`decision_audit` derives it again from a whole decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

AUDIT_SCHEMA = "pulse.audit/1"
# Data categories each model reads when it takes part in a personalized decision.
MODEL_DATA_CATEGORIES: dict[str, tuple[str, ...]] = {
    "recommender": ("interaction history", "category interests"),
    "churn": ("behavioural aggregates", "purchase history", "chat sentiment"),
    "sentiment": ("chat messages",),
    "policy": ("churn risk", "chat sentiment", "behaviour segment"),
    "segments": ("behavioural aggregates",),
}
POPULARITY_ONLY = ("aggregate item popularity (no personal data)",)


class Audit(TypedDict):
    """A decision's `audit` object."""

    schema: str
    basis: str
    personal_data: bool
    models: dict[str, str]
    data_categories: list[str]


def erasure_audit() -> Audit:
    """The audit of the decision answering `forget_user`: no model, no personal data."""
    return {"schema": AUDIT_SCHEMA, "basis": "erasure request", "personal_data": False, "models": {},
            "data_categories": []}


def popularity_audit(model_versions: Mapping[str, str], experiment: Mapping[str, str] | None) -> Audit:
    """The audit of a non-personalized decision: without consent, or for a holdout arm's user (`experiment`).

    >>> popularity_audit({"recommender": "reco@3", "policy": "p"}, None)["data_categories"]
    ['aggregate item popularity (no personal data)']
    """
    basis = (f"holdout arm {experiment['arm']!r} of experiment {experiment['name']!r}" if experiment
             else "no consent to personalization")
    return {"schema": AUDIT_SCHEMA, "basis": basis, "personal_data": False,
            "models": {name: model_versions[name] for name in ("recommender",) if name in model_versions},
            "data_categories": list(POPULARITY_ONLY)}


def personalized_audit(model_versions: Mapping[str, str], reads_message: bool) -> Audit:
    """The audit of a personalized decision; the text model takes part only when it read a chat message."""
    used = {name: version for name, version in model_versions.items() if name in MODEL_DATA_CATEGORIES}
    if not reads_message:
        used.pop("sentiment", None)
    categories = sorted({category for name in used for category in MODEL_DATA_CATEGORIES[name]})
    return {"schema": AUDIT_SCHEMA, "basis": "consent to personalization", "personal_data": True, "models": used,
            "data_categories": categories}


def decision_audit(decision: Mapping[str, Any]) -> Audit:
    """The audit record of a decision, derived from its fields (as operators.decision assembles it).

    >>> decision_audit({"personalized": False, "model_versions": {"recommender": "reco@3"}})["basis"]
    'no consent to personalization'
    """
    versions = decision.get("model_versions") or {}
    if decision.get("forgotten"):
        return erasure_audit()
    if not decision.get("personalized"):
        return popularity_audit(versions, decision.get("experiment"))
    return personalized_audit(versions, bool((decision.get("sentiment") or {}).get("message")))
