"""Auditable decisions: which models and which categories of personal data a decision used.

`decision_audit` derives the record from the decision itself, so it cannot disagree with what was
decided; the dataflow stores it as the decision's `audit` object (decision log, Redis, WebSocket).
"""

from __future__ import annotations

from typing import Any

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


def decision_audit(decision: dict[str, Any]) -> dict[str, Any]:
    """The audit record of one decision.

    >>> decision_audit({"personalized": False, "model_versions": {"recommender": "reco@3", "policy": "p"}})["data_categories"]
    ['aggregate item popularity (no personal data)']
    """
    versions = decision.get("model_versions") or {}
    if decision.get("forgotten"):
        return {"schema": AUDIT_SCHEMA, "basis": "erasure request", "personal_data": False, "models": {}, "data_categories": []}
    if not decision.get("personalized"):
        experiment = decision.get("experiment")  # set on a non-personalized decision only for a holdout's users
        basis = (f"holdout arm {experiment['arm']!r} of experiment {experiment['name']!r}" if experiment
                 else "no consent to personalization")
        return {"schema": AUDIT_SCHEMA, "basis": basis, "personal_data": False,
                "models": {name: versions[name] for name in ("recommender",) if name in versions},
                "data_categories": list(POPULARITY_ONLY)}
    used = {name: version for name, version in versions.items() if name in MODEL_DATA_CATEGORIES}
    if not (decision.get("sentiment") or {}).get("message"):
        used.pop("sentiment", None)  # the text model only reads chat events
    categories = sorted({category for name in used for category in MODEL_DATA_CATEGORIES[name]})
    return {"schema": AUDIT_SCHEMA, "basis": "consent to personalization", "personal_data": True, "models": used,
            "data_categories": categories}
