"""The personalization engine: per event, teach the models, decide, and explain the decision.

Plain Python with no Bytewax, Kafka or Redis inside: the dataflow calls `PersonalizationEngine.handle`
for each event of a user, and the same object runs in-process for evaluation and benchmarks.
The models are shared by every user handled in this process; the caller owns the per-user
`UserFeatures` (the dataflow keeps it in Bytewax state).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from river import stats
from river.utils.math import sigmoid

from online_models import (
    Action,
    ChurnClassifier,
    HybridRecommender,
    RuleBasedPolicy,
    SentimentClassifier,
)
from online_models.actions import OFFER_ACTIONS
from online_models.confidence import decision_confidence
from online_models.drift import DriftAdaptive, DriftDetector
from online_models.exploring_policy import ExploringPolicy
from online_models.recommender import RecommenderConfig
from online_models.segments import BehaviourSegmenter
from operators import decision as decisions
from operators.attribution import (
    OUTCOME_REWARD,
    Attribution,
    OutcomeLabels,
    PendingDecision,
)
from operators.cold_start import gate_offer
from operators.decision import Decision, ExperimentLabel
from operators.experiments import (
    DEFAULT_SALT,
    Arm,
    Experiment,
    ExperimentsFile,
    default_experiment,
)
from operators.features import (
    CHURN_FEATURES,
    CHURN_MODEL_FEATURES,
    CONTROL_EVENTS,
    INTERACTION_STRENGTH,
    UserFeatures,
)
from operators.long_term import ChurnLabels
from operators.rules import CANDIDATE_FACTOR, RulesFile

# What snapshots save and restore.
MODEL_NAMES = ("recommender", "churn_adaptive", "sentiment_adaptive", "recommender_drift", "policy", "segmenter",
               "action_rewards")
DRIFT_REPLAY = 2_000  # recent labeled examples kept to retrain a model from when its error drifts up
NON_PERSONALIZED_POLICY = "non-personalized"
SEGMENT_REFRESH_EVENTS = frozenset({"session_start", "session_end"})


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tunables of the engine (see pulse.config for their environment variables)."""

    top_k: int = 10
    churn_threshold: float = 0.6
    escalation_threshold: float = -0.5
    seed: int = 7
    attribution_window_ms: int = 30 * 60_000
    rules_file: str | None = None
    nba_epsilon: float = 0.05
    nba_warmup: int = 1000
    recommender: RecommenderConfig = field(default_factory=RecommenderConfig)
    experiments_file: str | None = None  # None: a holdout of `holdout_share` (operators.experiments)
    holdout_share: float = 0.0  # in-process default: everyone personalized (the dataflow reads PULSE_HOLDOUT_SHARE)
    experiment_salt: str = DEFAULT_SALT
    churn_horizon_ms: int = 0  # "not churned" labels earlier than this after their decision wait for it (long_term)
    churn_learning_rate: float = 0.02  # churn model's SGD step per label without a horizon ...
    churn_horizon_learning_rate: float = 0.002  # ... and with one (a day's labels come in cohort blocks)
    churn_frequency_prior: float = 1.0  # logit -k * log(visits) before labels (online_models.churn)
    churn_step_boost: float = 5.0  # step factor after the churn log-loss jumps (online_models.step_boost), no horizon
    churn_boost_decay_labels: float = 50.0  # ... decaying back to the base step with this time constant
    churn_change_threshold: float = 7.0  # Page-Hinkley threshold on the churn log-loss (nats) ...
    churn_change_allowance: float = 0.1  # ... and its allowance per label
    offer_min_confidence: float = 0.2  # offers need at least this decision confidence (cold_start)
    winback_min_idle_ms: int = 7 * 86_400_000  # quiet time before the first win-back check; 0: no win-back
    winback_channel: str = "email"


class PersonalizationEngine:
    """Shared online models plus the per-event procedure learn → decide → explain."""

    def __init__(self, config: EngineConfig = EngineConfig()) -> None:
        self.config = config
        self.recommender = HybridRecommender(seed=config.seed, **config.recommender.parameters())
        # Churn and sentiment are watched by ADWIN on their progressive-validation error; on an upward
        # drift each is replaced by a fresh model retrained on the examples since the change.
        # Labels learned at their horizon come in cohorts of decisions whose mix shifts with the customers, which
        # ADWIN reads as drift: then a drift is only counted (CDNOW, H = 90: 36 to 50 retrains cost 0.06 AUC).
        # The same cohorts make the log-loss jump without a change: the step boost only serves labels learned on
        # arrival (CDNOW, H = 90: boosted steps lost a cell against the RFM logistic, 5 of 6).
        self.churn_adaptive = DriftAdaptive(churn_model_factory(config), _learn_example, buffer_size=DRIFT_REPLAY,
                                            retrain=not config.churn_horizon_ms)
        self.sentiment_adaptive = DriftAdaptive(SentimentClassifier, _learn_example, buffer_size=DRIFT_REPLAY)
        self.recommender_drift = DriftDetector()  # miss rate of the previous recommendations (alarm only)
        self.policy = ExploringPolicy(
            RuleBasedPolicy(config.churn_threshold, config.escalation_threshold),
            epsilon=config.nba_epsilon, warmup=config.nba_warmup, seed=config.seed,
        )
        self.segmenter = BehaviourSegmenter()
        self.rules = RulesFile(config.rules_file)
        self.experiments = ExperimentsFile(config.experiments_file,
                                           default_experiment(config.holdout_share, config.experiment_salt))
        self.catalog: dict[str, dict[str, Any]] = {}  # item_id -> latest catalog event fields
        self.action_rewards: dict[str, stats.Mean] = {}  # realized reward per action, from attribution
        self.lock = threading.Lock()  # the dataflow's worker threads of one process share this engine
        self.snapshot_hash = "none"  # content hash of the snapshot the models descend from
        self.churn_labels = ChurnLabels(config.churn_horizon_ms, self._learn_churn, CHURN_FEATURES)

    @property
    def churn(self) -> ChurnClassifier:
        """The current churn model."""
        return self.churn_adaptive.model

    @property
    def sentiment(self) -> SentimentClassifier:
        """The current sentiment model."""
        return self.sentiment_adaptive.model

    def drift_counts(self) -> dict[str, int]:
        """Upward error drifts detected per model since start (churn and sentiment were retrained at each)."""
        return {"churn": self.churn_adaptive.detector.n_drifts, "sentiment": self.sentiment_adaptive.detector.n_drifts,
                "recommender": self.recommender_drift.n_drifts}

    def models(self) -> dict[str, Any]:
        """The learned models, by name (what a snapshot saves)."""
        return {name: getattr(self, name) for name in MODEL_NAMES}

    def restore_models(self, models: dict[str, Any], snapshot_hash: str) -> None:
        """Replace the learned models with a snapshot's (rollback); decisions then name its hash."""
        for name in MODEL_NAMES:
            setattr(self, name, models[name])
        self.snapshot_hash = snapshot_hash

    def apply_item(self, event: dict[str, Any]) -> dict[str, Any]:
        """Apply a catalog event (`item_upsert` / `item_delete`): ranking sees the change at once.

        Returns the item's catalog record (`deleted: true` after a delete).
        """
        item_id = event["item_id"]
        if event["type"] == "item_delete":
            record = {**self.catalog.get(item_id, {"item_id": item_id}), "deleted": True, "updated_ts": event["ts"]}
            if self.recommender.category_of(item_id) is not None:
                self.recommender.set_availability(item_id, listed=False)
        else:
            record = {
                "item_id": item_id, "category": event["category"], "price": event.get("price"),
                "tags": event.get("tags", []), "in_stock": event.get("in_stock", True),
                "available_from": event.get("available_from"), "available_until": event.get("available_until"),
                "deleted": False, "updated_ts": event["ts"],
            }
            self.recommender.add_item(item_id, event["category"])
            self.recommender.set_availability(
                item_id, record["in_stock"], record["available_from"], record["available_until"]
            )
        self.catalog[item_id] = record
        return record

    def handle(
        self, profile: UserFeatures | None, event: dict[str, Any], ingest_ms: int
    ) -> tuple[UserFeatures | None, Decision]:
        """Process one valid event of one user; return the user's new profile (None: forget it) and the decision.

        The outcomes the event settles are learned from; `handle_with_outcomes` also returns them.
        """
        profile, decision, _ = self.handle_with_outcomes(profile, event, ingest_ms)
        return profile, decision

    def handle_with_outcomes(
        self, profile: UserFeatures | None, event: dict[str, Any], ingest_ms: int
    ) -> tuple[UserFeatures | None, Decision, list[dict[str, Any]]]:
        """`handle`, plus the outcome records of the decisions this event settled (for the outcome log)."""
        event_type = event["type"]
        if event_type == "forget_user":
            self.recommender.forget_user(event["user_id"])
            return None, self._forgotten(event, ingest_ms), []  # pending decisions are dropped, not logged
        if profile is None:
            profile = UserFeatures(first_ts=event["ts"], user_id=event["user_id"])
        if event_type == "consent":
            if not event["personalization"]:
                # withdrawing consent erases the profile built so far
                profile = UserFeatures(first_ts=event["ts"], user_id=event["user_id"])
                self.recommender.forget_user(event["user_id"])
            profile.personalization = event["personalization"]
        if not profile.personalization:
            return profile, self._non_personalized(event, ingest_ms), []
        experiment = self.experiments.current()
        arm = experiment.assign(event["user_id"])
        settled = self._attribute(profile, event)
        self.churn_labels.release(profile.memory, event["ts"])
        message_sentiment = self._learn(profile, event)
        if arm.personalized:
            decision, context = self._decide(profile, event, ingest_ms, message_sentiment, arm, experiment.label(arm))
        else:
            decision, context = self._holdout(event, ingest_ms, experiment, arm), {}
        labels = OutcomeLabels(experiment.name, arm.name, arm.personalized, event_type)
        evicted = profile.pending.add(self._pending(decision, context, labels), event["user_id"])
        for attribution in evicted:
            self._learn_reward(attribution)
        return profile, decision, [attribution.to_dict() for attribution in settled + evicted]

    def _attribute(self, profile: UserFeatures, event: dict[str, Any]) -> list[Attribution]:
        """Settle decisions whose wait window closed, then join this event to a decision if it is an outcome."""
        window = self.config.attribution_window_ms
        settled = profile.pending.settle_expired(event["ts"], window, event["user_id"])
        if event["type"] in OUTCOME_REWARD:
            if profile.pending.entries:  # was the item among the latest recommendations? (drift watch)
                self.recommender_drift.update(0.0 if event.get("item_id") in profile.pending.entries[-1].items else 1.0)
            profile.pending.join(event, window)
        for attribution in settled:
            self._learn_reward(attribution)
        return settled

    def expire(self, profile: UserFeatures, user_id: str, now_ms: int, idle: bool) -> list[dict[str, Any]]:
        """Settle the user's decisions whose window closed by `now_ms` (all of them when the user goes `idle`)."""
        pending = profile.pending
        settled = (pending.settle_all(now_ms, user_id, "user expired") if idle
                   else pending.settle_expired(now_ms, self.config.attribution_window_ms, user_id))
        for attribution in settled:
            self._learn_reward(attribution)
        return [attribution.to_dict() for attribution in settled]

    def _learn_reward(self, attribution: Attribution) -> None:
        decision = attribution.decision
        if decision.labels is not None and not decision.labels.personalized:
            return  # a holdout's decision: the policy did not choose it
        self.action_rewards.setdefault(decision.action, stats.Mean()).update(decision.reward)
        self.policy.learn_one(decision.context, decision.action, decision.reward)

    @staticmethod
    def _pending(decision: Decision, context: dict[str, float], labels: OutcomeLabels) -> PendingDecision:
        return PendingDecision(
            decision["decision_id"], decision["event_ts"], decision["action"]["name"], decision["action"]["propensity"],
            tuple([rec["item_id"] for rec in decision["recommendations"]]), context, labels=labels,
        )

    def _learn(self, profile: UserFeatures, event: dict[str, Any]) -> dict[str, Any] | None:
        """Update the profile and every model this event teaches; return the chat message's sentiment, if any."""
        event_type = event["type"]
        item_id = event.get("item_id")
        teaches_recommender = item_id is not None and event_type in INTERACTION_STRENGTH
        if teaches_recommender:  # the user's context and affinities as they were before this event
            context, affinity = profile.items.recent, profile.category_affinity.copy()
        profile.update(event)
        if teaches_recommender:
            self.recommender.learn_one(event["user_id"], item_id, event.get("category"),
                                       INTERACTION_STRENGTH[event_type], event["ts"], context, affinity)
        if event_type == "churn_outcome" and profile.n_events:
            # Learned on the features served at the user's latest behavioural event: labels change no feature.
            self.churn_labels.on_label(profile.memory, profile.churn_features(), event["churned"], profile.last_ts,
                                       event["ts"])
        if event_type != "chat_message":
            return None
        text = event["text"]
        # Progressive validation: score the message before its label (if any) teaches the model.
        explanation = self.sentiment.explain_one(text)
        score = 2.0 * sigmoid(explanation.score) - 1.0  # = 2 P(positive) - 1, from the same pass
        label = event.get("label")
        if label is not None:
            error = abs(float(label == "positive") - (score + 1.0) / 2.0)
            self.sentiment_adaptive.learn_one((text, label), error=error)
        profile.observe_sentiment(score)
        return {"score": score, "label": label, "explanation": explanation.to_dict()}

    def _learn_churn(self, x: dict[str, float], churned: bool) -> None:
        error = abs(float(churned) - self.churn.predict_proba_one(x)[True])
        self.churn_adaptive.learn_one((x, churned), error=error)

    def _decide(
        self, profile: UserFeatures, event: dict[str, Any], ingest_ms: int, message_sentiment: dict[str, Any] | None,
        arm: Arm, experiment: ExperimentLabel,
    ) -> tuple[Decision, dict[str, float]]:
        """The decision, and the context the next-best-action policy chose in (its rewards are learned in it)."""
        user_id = event["user_id"]
        features = profile.churn_features()
        churn_explanation = self.churn.explain_one(features)
        churn_probability = float(sigmoid(churn_explanation.score))  # = predict_proba_one (tested), one pass
        affinity = profile.normalized_affinity()
        recommendations, applied_rules = self._recommend(profile, user_id, event["ts"], affinity)
        context = {**features, "churn_probability": churn_probability}
        sentiment, escalation_rule = self._escalation_signal(profile)
        action = self.policy.decide(context, churn_probability, sentiment)
        if action.name == "escalate_to_agent":
            profile.history.escalated_at_chat = profile.n_chats
        threshold = min(max(self.config.churn_threshold, 1e-6), 1 - 1e-6)
        confidence = decision_confidence(churn_probability, threshold, profile.n_events)
        action, cold_start_rule = gate_offer(action, confidence, self.config.offer_min_confidence)
        action, offer_rule = self._limit_offers(action, profile, event["ts"], arm)
        segment = self._segment(profile, event["type"], features)
        if event["type"] not in CONTROL_EVENTS:
            profile.memory.served_probability = churn_probability
        applied_rules += escalation_rule + cold_start_rule + offer_rule
        decision = decisions.personalized(
            _header(event, ingest_ms, _now_ms()),
            recommendations=recommendations,
            churn={"probability": churn_probability, "explanation": churn_explanation.to_dict()},
            sentiment={"recent": profile.recent_sentiment, "message": message_sentiment},
            action={**action.to_dict(), "observed_reward": self._observed_reward(action.name)},
            confidence=confidence,
            segment=segment,
            rules=applied_rules,
            model_versions=self.model_versions(),
            recommendation_weights=self.recommender.weights(),
            features={**features, "sessions": profile.n_sessions, "purchases": profile.n_purchases},
            category_affinity=affinity,
            experiment=experiment,
        )
        return decision, context

    def _segment(self, profile: UserFeatures, event_type: str, features: dict[str, float]) -> int:
        """The user's behaviour segment, re-learned and re-assigned at session boundaries (cheap in between)."""
        if profile.segment is None or event_type in SEGMENT_REFRESH_EVENTS:
            self.segmenter.learn_one(features)
            profile.segment = self.segmenter.predict_one(features)
        return profile.segment

    def _recommend(
        self, profile: UserFeatures, user_id: str, now_ms: int, affinity: dict[str, float]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Top-k under the business rules (`affinity`: the profile's normalized category affinities): the
        recommendations (as decision records), the rules that shaped them."""
        rules = self.rules.current()
        k = self.config.top_k
        category_filter = rules.category_filter()
        excluded = rules.exclusions(profile.history, now_ms)
        excluded_keys, keys_reason = rules.excluded_keys(profile.items)
        context = profile.items.recent
        # Exclusions and category rules act inside ranking; pins and the diversity cap need spare candidates.
        n_candidates = k * CANDIDATE_FACTOR if rules.max_per_category else k + len(rules.pinned_items)
        ranked = self.recommender.ranked(user_id, n_candidates, affinity, now_ms, excluded, category_filter, context,
                                         excluded_keys)
        pinned = (self.recommender.score_items(user_id, rules.pinned_items, affinity, now_ms, category_filter, context)
                  if rules.pinned_items else [])
        recommendations, applied = rules.finalize(ranked, pinned, k)
        by_reason: dict[str, list[str]] = {}
        for item, reason in excluded.items():
            by_reason.setdefault(reason, []).append(item)
        applied += [{"rule": "exclude", "effect": f"excluded: {reason}", "items": items[:20], "count": len(items)}
                    for reason, items in by_reason.items()]
        if excluded_keys is not None and len(excluded_keys):
            applied.append({"rule": "exclude", "effect": f"excluded: {keys_reason}",
                            "items": self.recommender.item_ids_of(excluded_keys, limit=20),
                            "count": len(excluded_keys)})
        if category_filter is not None:
            applied.append({"rule": "categories", "effect": "category allow/deny lists and boosts applied",
                            "allow": list(rules.allow_categories), "deny": list(rules.deny_categories),
                            "boosts": rules.category_boosts})
        return recommendations, applied

    def _escalation_signal(self, profile: UserFeatures) -> tuple[float | None, list[dict[str, Any]]]:
        """The recent sentiment the policy may escalate on, and the rule that withheld it.

        A hand-over to a human answers the chat messages sent so far: until the user sends another one,
        the policy sees no sentiment (it cannot escalate again) and the decision records why.
        """
        sentiment = profile.recent_sentiment
        if sentiment is None or profile.history.escalated_at_chat != profile.n_chats:
            return sentiment, []
        return None, [{"rule": "escalation_once",
                       "effect": f"sentiment {sentiment:.2f}: already handed over to an agent, no chat message since"}]

    def _limit_offers(self, action: Action, profile: UserFeatures, now_ms: int,
                      arm: Arm) -> tuple[Action, list[dict[str, Any]]]:
        """Enforce the experiment arm's offers setting and the offer frequency limit; remember when an offer is made."""
        if action.name not in OFFER_ACTIONS:
            return action, []
        if not arm.offers:
            why = f"{action.name} withheld: experiment arm {arm.name!r} makes no offers"
            return Action("recommend", 1.0, why), [{"rule": "experiment", "effect": why}]
        allowed, why = self.rules.current().offer_allowed(profile.history, now_ms)
        if not allowed:
            return Action("recommend", 1.0, why), [{"rule": "offer_limit", "effect": why}]
        profile.history.last_offer_ms = now_ms
        return action, []

    def _observed_reward(self, action: str) -> float | None:
        mean = self.action_rewards.get(action)
        return None if mean is None or mean.n == 0 else mean.get()

    def _holdout(self, event: dict[str, Any], ingest_ms: int, experiment: Experiment, arm: Arm) -> Decision:
        """Decision for a user in a holdout arm: the non-personalized one (the profile still learns)."""
        return self._non_personalized(
            event, ingest_ms, f"holdout: arm {arm.name!r} of experiment {experiment.name!r} is not personalized",
            {"experiment": experiment.version}, experiment.label(arm))

    def _non_personalized(self, event: dict[str, Any], ingest_ms: int,
                          reason: str = "personalization off: no consent", versions: dict[str, str] | None = None,
                          experiment: ExperimentLabel | None = None) -> Decision:
        """Decision for a user without consent (in no experiment) or in a holdout: popularity only, no profile,
        no offers; `versions` adds to the model versions."""
        recommendations = self.recommender.rank_popular(self.config.top_k, now_ms=event["ts"])
        return decisions.non_personalized(
            _header(event, ingest_ms, _now_ms()),
            recommendations=[rec.to_dict() for rec in recommendations],
            reason=reason,
            model_versions={"recommender": self.recommender.version, "policy": NON_PERSONALIZED_POLICY,
                            **(versions or {})},
            experiment=experiment,
        )

    def _forgotten(self, event: dict[str, Any], ingest_ms: int) -> Decision:
        return decisions.forgotten(_header(event, ingest_ms, _now_ms()))

    def model_versions(self) -> dict[str, str]:
        """The version of every model, the policy, the rules and the snapshot the models descend from."""
        return {
            "recommender": self.recommender.version,
            "churn": f"{self.churn.version}/gen{len(self.churn_adaptive.adaptations)}",
            "sentiment": f"{self.sentiment.version}/gen{len(self.sentiment_adaptive.adaptations)}",
            "policy": self.policy.version,
            "segments": f"kmeans-{self.segmenter.n_segments}",
            "rules": self.rules.current().version,
            "experiment": self.experiments.loaded.version,
            "snapshot": self.snapshot_hash,
        }


def _header(event: dict[str, Any], ingest_ms: int, decided_ms: int) -> decisions.Header:
    return decisions.header(event["event_id"], event["user_id"], event["type"], event["ts"], ingest_ms, decided_ms)


def churn_model_factory(config: EngineConfig) -> Callable[[], ChurnClassifier]:
    """What builds the engine's churn model (and its drift retrains): the step for labels learned on arrival or
    at a horizon, the frequency prior, the model's inputs, and the drift-adaptive step, off with a horizon."""
    horizon = bool(config.churn_horizon_ms)
    return partial(ChurnClassifier, learning_rate=config.churn_horizon_learning_rate if horizon
                   else config.churn_learning_rate, frequency_prior=config.churn_frequency_prior,
                   features=CHURN_MODEL_FEATURES, step_boost=1.0 if horizon else config.churn_step_boost,
                   boost_decay_labels=config.churn_boost_decay_labels,
                   change_threshold=config.churn_change_threshold, change_allowance=config.churn_change_allowance)


def _learn_example(model: Any, example: tuple[Any, ...]) -> None:
    model.learn_one(*example)


def _now_ms() -> int:
    return int(time.time() * 1000)
