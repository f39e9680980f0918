"""Proactive win-back: a decision the engine makes on its own when a quiet user's churn risk crosses the threshold.

A churning customer sends no events, so waiting for one means never acting. From `min_idle_ms` after
the user's latest behavioural event, the user's step checks their churn probability at that moment
(`UserFeatures.churn_features(now)`: recency and the visit gap grow with the quiet time), again at
intervals `CHECK_GROWTH` times the quiet time so far (1.25: about 17 checks from a week to a year).
Once it is at or above the churn threshold, and the offer is allowed (consent, the cold-start
confidence gate, the rules' offer limit), one decision with `trigger: "inactivity"` and action
`win_back_offer` (with its channel) goes out like any other: explained, versioned and audited, to
Redis, WebSocket subscribers and the decision log. At most one per quiet stretch: the next one needs
the user to come back first. Its churn probability is not learned from (the label that may follow
refers to the decision served at the user's latest event), and it waits for no outcome.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from river.utils.math import sigmoid

from online_models.actions import WIN_BACK_OFFER
from online_models.confidence import decision_confidence
from operators import decision as decisions
from operators.decision import Decision
from operators.engine import _now_ms
from operators.features import UserFeatures

if TYPE_CHECKING:
    from operators.engine import PersonalizationEngine

CHECK_GROWTH = 1.25  # each check waits this many times the quiet time of the previous one
TRIGGER = "inactivity"
MS_PER_DAY = 86_400_000


def next_check_ms(last_ts: int, now_ms: int, min_idle_ms: int) -> int:
    """The first check time after `now_ms` for a user quiet since `last_ts`: `last_ts + min_idle * 1.25**k`.

    >>> day = 86_400_000
    >>> next_check_ms(0, now_ms=0, min_idle_ms=7 * day) // day
    7
    >>> next_check_ms(0, now_ms=7 * day, min_idle_ms=7 * day) / day
    8.75
    """
    idle = now_ms - last_ts
    if idle < min_idle_ms:
        return last_ts + min_idle_ms
    k = math.floor(math.log(idle / min_idle_ms) / math.log(CHECK_GROWTH)) + 1
    due = last_ts + math.ceil(min_idle_ms * CHECK_GROWTH**k)
    return due if due > now_ms else now_ms + 1


def due_check_ms(engine: PersonalizationEngine, last_ts: int, winback_for_ms: int | None, personalization: bool,
                 now_ms: int) -> int | None:
    """When the user's next win-back check is due (None: win-back off, no consent, or already sent this stretch)."""
    min_idle = engine.config.winback_min_idle_ms
    if not min_idle or not personalization or winback_for_ms == last_ts:
        return None
    return next_check_ms(last_ts, now_ms, min_idle)


def win_back(engine: PersonalizationEngine, profile: UserFeatures, now_ms: int) -> Decision | None:
    """The win-back decision for `profile` quiet at `now_ms`, or None when none is due or allowed.

    Sending one remembers it (the profile's last offer and the stretch it was sent in).
    """
    memory, config = profile.memory, engine.config
    experiment = engine.experiments.current()
    arm = experiment.assign(profile.user_id)
    if not arm.personalized or not arm.offers:
        return None  # a holdout, or an arm that makes no offers
    if (not profile.personalization or not profile.n_events or memory.winback_for_ms == profile.last_ts
            or not config.winback_min_idle_ms or now_ms - profile.last_ts < config.winback_min_idle_ms):
        return None
    features = profile.churn_features(now_ms)
    explanation = engine.churn.explain_one(features)
    probability = float(sigmoid(explanation.score))
    threshold = min(max(config.churn_threshold, 1e-6), 1 - 1e-6)
    if probability < threshold:
        return None
    confidence = decision_confidence(probability, threshold, profile.n_events)
    if confidence < config.offer_min_confidence:
        return None  # cold start: too little known of the user
    allowed, _ = engine.rules.current().offer_allowed(profile.history, now_ms)
    if not allowed:
        return None
    profile.history.last_offer_ms = now_ms
    memory.winback_for_ms = profile.last_ts
    user_id = profile.user_id
    affinity = profile.normalized_affinity()
    recommendations, applied_rules = engine._recommend(profile, user_id, now_ms, affinity)
    quiet_days = (now_ms - profile.last_ts) / MS_PER_DAY
    event_id = f"{TRIGGER}:{user_id}:{profile.last_ts}"  # one per quiet stretch: replays rewrite the same decision
    return decisions.personalized(
        decisions.header(event_id, user_id, TRIGGER, now_ms, now_ms, _now_ms(), trigger=TRIGGER),
        recommendations=recommendations,
        churn={"probability": probability, "explanation": explanation.to_dict()},
        sentiment={"recent": profile.recent_sentiment, "message": None},
        action={"name": WIN_BACK_OFFER, "propensity": 1.0, "channel": config.winback_channel,
                "reason": f"no activity for {quiet_days:.1f} days: churn probability {probability:.2f} "
                          f">= {config.churn_threshold:.2f}, win the customer back",
                "observed_reward": None},
        confidence=confidence,
        segment=profile.segment,
        rules=applied_rules,
        model_versions=engine.model_versions(),
        recommendation_weights=None,  # left out of win-backs (as before the decision was typed)
        features={**features, "sessions": profile.n_sessions, "purchases": profile.n_purchases},
        category_affinity=affinity,
        experiment=experiment.label(arm),
    )
