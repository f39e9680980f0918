"""Run a scenario through the real models: online vs static vs periodic retraining, and an A/B test.

One pass over one `ScenarioStream`; every event goes to

1. **model variants** (copies of the engine's model classes fed the same events and the same
   per-user `UserFeatures`): `online` (learns on every event), `static` (learns on the first
   `freeze_at` of the stream, then frozen), `periodic` (like static until the freeze point, then
   every `retrain_every` events replaced by a fresh model trained on the last `window` events), and
   `online+adwin` (online, plus ADWIN on each model's error: on drift the model is rebuilt from
   the examples since the change). Each is scored *before* it learns (progressive validation):
   churn on `churn_outcome`, recommendations on organic `page_view` (is the viewed item in the
   top 10 ranked just before?), sentiment on labelled `chat_message`.
2. **the real `PersonalizationEngine`** for an A/B test: users are assigned at first sight by
   stratified block randomization (strata: hidden engagement tercile x hidden churn risk above/below
   0.25) to `control` (the engine's non-personalized path: popularity ranking, no offers),
   `personalized` (the engine's decision as is: recommendations + rule-based action) or
   `personalized+bandit` (the engine's recommendations, action chosen by the contextual bandit).
   At each `session_start` the decision is shown and the simulated user reacts (ground truth).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from river.utils.math import sigmoid

from evaluation import metrics as M
from evaluation.progress import progress_bar
from online_models import ChurnClassifier, HybridRecommender, SentimentClassifier
from online_models.bandit import NBA_ACTIONS, EpsilonGreedyBandit
from online_models.confidence import decision_confidence
from online_models.drift import DriftAdaptive
from online_models.recommender import RecommenderConfig
from online_models.segments import BehaviourSegmenter
from online_models.selection import ModelSelector
from operators.engine import EngineConfig, PersonalizationEngine, churn_model_factory
from operators.features import INTERACTION_STRENGTH, UserFeatures
from simulator.scenarios import SCENARIOS, ScenarioStream

VARIANTS = ("online", "static", "periodic", "online+adwin")
ARMS = ("control", "personalized", "personalized+bandit")
CHURN_PENALTY = 3.0  # reward lost when a user churns, in median prices (the bandit's reward scale)
K = 10


@dataclass
class EvalConfig:
    """Options of one evaluation run."""

    scenario: str = "stationary"
    events: int = 60_000
    seed: int = 7
    users: int = 800
    items: int = 400
    freeze_at: float = 0.2
    retrain_every: int = 0  # 0: events // 10
    window: int = 0  # 0: 2 * retrain_every
    buckets: int = 40
    bandit_epsilon: float = 0.1

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose from {', '.join(SCENARIOS)}")
        if self.events < 100:
            raise ValueError("events must be >= 100")
        if not 0.0 < self.freeze_at < 1.0:
            raise ValueError("freeze_at must be in (0, 1)")
        self.retrain_every = self.retrain_every or max(self.events // 10, 1)
        self.window = self.window or 2 * self.retrain_every


# ----------------------------------------------------------------------------------------------------------------
# Model variants


def _learn_reco(model: HybridRecommender, ex: tuple) -> None:
    model.learn_one(*ex)


def _learn_churn(model: ChurnClassifier, ex: tuple) -> None:
    model.learn_one(*ex)


def _learn_sentiment(model: SentimentClassifier, ex: tuple) -> None:
    model.learn_one(*ex)


TASKS: dict[str, tuple[Callable[[int], Any], Callable[[Any, tuple], None]]] = {
    "reco": (lambda seed: HybridRecommender(seed=seed, **RecommenderConfig().parameters()), _learn_reco),
    "churn": (lambda seed: churn_model_factory(EngineConfig())(), _learn_churn),  # as the engine's
    "sentiment": (lambda seed: SentimentClassifier(), _learn_sentiment),
}


class Variant:
    """One learning regime over copies of the engine's three models, with its own per-user features."""

    def __init__(self, name: str, cfg: EvalConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.freeze_step = int(cfg.freeze_at * cfg.events)
        self.profiles: dict[str, UserFeatures] = {}
        seed = cfg.seed
        self.adaptive: dict[str, DriftAdaptive] = {}
        if name == "online+adwin":
            self.adaptive = {task: DriftAdaptive(lambda f=factory: f(seed), learn, delta=0.002, min_replay=300)
                             for task, (factory, learn) in TASKS.items()}
        self.models = {task: factory(seed) for task, (factory, _) in TASKS.items()}
        self.buffers: dict[str, deque] = {task: deque() for task in TASKS}
        self.retrains: list[int] = []
        self.drift_steps: dict[str, list[int]] = {task: [] for task in TASKS}

    def model(self, task: str) -> Any:
        return self.adaptive[task].model if self.adaptive else self.models[task]

    def learns(self, step: int) -> bool:
        return self.name in ("online", "online+adwin") or step < self.freeze_step

    def maybe_retrain(self, step: int) -> None:
        """Periodic variant: every `retrain_every` events after the freeze, retrain on the last `window` events."""
        if self.name != "periodic" or step < self.freeze_step or (step - self.freeze_step) % self.cfg.retrain_every:
            return
        for task, (factory, learn) in TASKS.items():
            buffer = self.buffers[task]
            while buffer and buffer[0][0] <= step - self.cfg.window:
                buffer.popleft()
            fresh = factory(self.cfg.seed)
            for _, example in buffer:
                learn(fresh, example)
            self.models[task] = fresh
        self.retrains.append(step)

    def learn(self, step: int, task: str, example: tuple, error: float | None) -> None:
        if self.name == "periodic":
            self.buffers[task].append((step, example))
        if not self.learns(step):
            return
        if self.adaptive:
            if self.adaptive[task].learn_one(example, error):
                self.drift_steps[task].append(step)
        else:
            TASKS[task][1](self.models[task], example)


@dataclass
class Records:
    """Progressive-validation records of one variant."""

    churn: list[tuple[int, bool, float]] = field(default_factory=list)
    reco: list[tuple[int, float, float, float]] = field(default_factory=list)  # step, hit, ndcg, diversity
    reco_items: dict[int, set] = field(default_factory=lambda: defaultdict(set))  # bucket -> recommended item ids
    reco_catalog: dict[int, int] = field(default_factory=dict)  # bucket -> catalog size
    sentiment: list[tuple[int, str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# A/B test


class StratifiedAssigner:
    """Block randomization within strata: each stratum cycles through random permutations of the arms."""

    def __init__(self, arms: tuple[str, ...], seed: int) -> None:
        self.arms = arms
        self._rng = np.random.default_rng([seed, 99])
        self._blocks: dict[Any, list[str]] = defaultdict(list)
        self.assigned: dict[str, str] = {}
        self.strata: dict[str, Any] = {}

    def assign(self, user_id: str, stratum: Any) -> str:
        arm = self.assigned.get(user_id)
        if arm is None:
            block = self._blocks[stratum]
            if not block:
                block.extend(self._rng.permutation(self.arms).tolist())
            arm = self.assigned[user_id] = block.pop()
            self.strata[user_id] = stratum
        return arm


def _stratum(profile) -> tuple[int, bool]:
    return (min(int(profile.engagement * 3), 2), profile.churn_risk >= 0.25)


def _bandit_context(decision: dict[str, Any], segment: int, n_segments: int) -> dict[str, float]:
    features = decision.get("features") or {}
    sentiment = (decision.get("sentiment") or {}).get("recent")
    context = {
        "churn_probability": float(decision["churn"]["probability"]),
        "sentiment": float(sentiment) if sentiment is not None else 0.0,
        "has_sentiment": 1.0 if sentiment is not None else 0.0,
    }
    for name in ("events_per_session", "purchases_per_session", "cart_abandonment", "monetary_log", "click_through"):
        context[name] = float(features.get(name, 0.0))
    for s in range(n_segments):
        context[f"segment_{s}"] = 1.0 if s == segment else 0.0
    return context


def explanation_errors(decision: dict[str, Any]) -> dict[str, float]:
    """Absolute errors of a personalized decision's explanations (all ~0 when they are exact)."""
    errors: dict[str, float] = {}
    churn = decision.get("churn")
    if churn:
        e = churn["explanation"]
        total = math.fsum([e["intercept"], *e["contributions"].values()])
        errors["churn_sum"] = abs(total - e["score"])
        errors["churn_probability"] = abs(sigmoid(e["score"]) - churn["probability"])
    message = (decision.get("sentiment") or {}).get("message")
    if message:
        e = message["explanation"]
        total = math.fsum([e["intercept"], *e["contributions"].values()])
        errors["sentiment_sum"] = abs(total - e["score"])
        errors["sentiment_score"] = abs(2.0 * sigmoid(e["score"]) - 1.0 - message["score"])
    recs = decision.get("recommendations") or []
    if recs:
        errors["recommendation_sum"] = max(abs(math.fsum(r["components"].values()) - r["score"]) for r in recs)
    return errors


# ----------------------------------------------------------------------------------------------------------------
# The run


def run(cfg: EvalConfig, progress: bool = False, on_decision: Callable[[str, dict, dict], None] | None = None) -> dict:
    """Run the scenario; return every record the report needs.

    `on_decision(arm, event, served)` sees each shown decision.
    """
    started = time.perf_counter()
    scenario = SCENARIOS[cfg.scenario]
    stream = ScenarioStream(scenario, n_events=cfg.events, users=cfg.users, items=cfg.items, seed=cfg.seed)
    median_price = stream.world.median_price
    variants = {name: Variant(name, cfg) for name in VARIANTS}
    records = {name: Records() for name in VARIANTS}
    bucket_size = max(cfg.events // cfg.buckets, 1)

    engine = PersonalizationEngine(EngineConfig(top_k=K, seed=cfg.seed))
    ab_profiles: dict[str, UserFeatures] = {}
    assigner = StratifiedAssigner(ARMS, cfg.seed)
    segmenter = BehaviourSegmenter(n_segments=5)
    bandit = EpsilonGreedyBandit(NBA_ACTIONS, epsilon=cfg.bandit_epsilon, seed=cfg.seed)
    user_stats: dict[str, dict[str, float]] = {}
    pending: dict[str, dict[str, Any]] = {}
    decision_log: list[dict[str, Any]] = []
    explanation_max: dict[str, float] = defaultdict(float)
    n_checked = 0
    confidence_records: list[tuple[float, bool, float]] = []  # confidence, churned, p
    segment_stats: dict[int, list[tuple[str, float, float]]] = defaultdict(list)

    churn_candidates = {"logreg-lr0.05": ChurnClassifier(0.05), "logreg-lr0.01": ChurnClassifier(0.01),
                        "logreg-lr0.2": ChurnClassifier(0.2)}
    churn_selector = ModelSelector(list(churn_candidates), bigger_is_better=False, window=300, min_samples=150,
                                   margin=0.02)
    churn_selected: list[tuple[int, bool, float]] = []
    sent_candidates = {"vader-nb-lr0.3": SentimentClassifier(learning_rate=0.3),
                       "vader-nb-lr1.0": SentimentClassifier(learning_rate=1.0)}
    sent_selector = ModelSelector(list(sent_candidates), bigger_is_better=True, window=200, min_samples=100,
                                  margin=0.01)
    reco_selector = ModelSelector(["online", "online+adwin"], bigger_is_better=True, window=2000,
                                  min_samples=1000, margin=0.02)
    reco_selected: list[float] = []

    def finalize(uid: str) -> None:
        entry = pending.pop(uid, None)
        if entry is not None:
            decision_log.append(entry)
            if entry["context"] is not None:  # the bandit learns once the decision's outcome is complete
                bandit.update(entry["action"], entry["context"], entry["reward"])

    for step, event in enumerate(progress_bar(stream, progress, f"evaluate {cfg.scenario}", total=cfg.events)):
        uid, etype, ts = event["user_id"], event["type"], event["ts"]
        bucket = step // bucket_size
        organic_view = etype == "page_view" and event.get("decision_id") is None

        # 1. model variants: evaluate, then learn -------------------------------------------------------------
        reco_hits: dict[str, float] = {}
        for name, variant in variants.items():
            variant.maybe_retrain(step)
            rec = records[name]
            profile = variant.profiles.get(uid)
            if profile is None:
                profile = variant.profiles[uid] = UserFeatures(first_ts=ts)
            reco_error = churn_error = sent_error = None
            if organic_view:
                ranked = variant.model("reco").rank(uid, K, profile.normalized_affinity(), now_ms=ts,
                                                    context=profile.items.recent)
                ids = [r.item_id for r in ranked]
                hit = M.hit_at_k(ids, event["item_id"], K)
                rec.reco.append((step, hit, M.ndcg_at_k(ids, event["item_id"], K),
                                 M.intra_list_diversity([r.category for r in ranked])))
                rec.reco_items[bucket].update(ids)
                rec.reco_catalog[bucket] = len(stream.world.items)
                reco_hits[name] = hit
                reco_error = 1.0 - hit
            if etype == "churn_outcome":
                x = profile.churn_features()
                p = variant.model("churn").predict_proba_one(x)[True]
                rec.churn.append((step, bool(event["churned"]), p))
                q = min(max(p, 1e-6), 1 - 1e-6)  # ADWIN watches the log loss, scaled to [0, 1]
                churn_error = min(-math.log(q if event["churned"] else 1.0 - q) / 4.0, 1.0)
                if name == "online":
                    confidence = decision_confidence(p, 0.5, profile.n_events)
                    confidence_records.append((confidence, bool(event["churned"]), p))
                    scores = {}
                    for cname, cmodel in churn_candidates.items():
                        cp = min(max(cmodel.predict_proba_one(x)[True], 1e-15), 1 - 1e-15)
                        scores[cname] = -math.log(cp if event["churned"] else 1.0 - cp)
                    churn_selected.append((step, bool(event["churned"]),
                                           churn_candidates[churn_selector.champion].predict_proba_one(x)[True]))
                    churn_selector.observe(step, scores)
                    for cmodel in churn_candidates.values():
                        cmodel.learn_one(x, event["churned"])
            # learn, exactly like PersonalizationEngine._learn
            context, affinity = profile.items.recent, profile.category_affinity.copy()
            profile.update(event)
            item_id = event.get("item_id")
            if item_id is not None and etype in INTERACTION_STRENGTH:
                example = (uid, item_id, event.get("category"), INTERACTION_STRENGTH[etype], ts, context, affinity)
                variant.learn(step, "reco", example, reco_error)
                reco_error = None
            elif reco_error is not None and variant.adaptive and variant.adaptive["reco"].observe_error(reco_error):
                variant.drift_steps["reco"].append(step)
            if etype == "churn_outcome":
                variant.learn(step, "churn", (profile.churn_features(), event["churned"]), churn_error)
            if etype == "chat_message":
                text, label = event["text"], event.get("label")
                score = 2.0 * variant.model("sentiment").predict_proba_one(text)["positive"] - 1.0
                if label is not None:
                    predicted = "positive" if score >= 0 else "negative"
                    rec.sentiment.append((step, label, predicted))
                    sent_error = float(predicted != label)
                    if name == "online":
                        outcomes = {c: float(m.predict_one(text) == label) for c, m in sent_candidates.items()}
                        sent_selector.observe(step, outcomes)
                        for m in sent_candidates.values():
                            m.learn_one(text, label)
                    variant.learn(step, "sentiment", (text, label), sent_error)
                profile.observe_sentiment(score)
        if len(reco_hits) == len(VARIANTS):
            reco_selected.append(reco_hits[reco_selector.champion])
            reco_selector.observe(step, {n: reco_hits[n] for n in reco_selector.names})

        # 2. A/B test through the real engine -----------------------------------------------------------------
        truth = stream.profiles[uid]
        arm = assigner.assign(uid, _stratum(truth))
        stats = user_stats.setdefault(uid, {"arm": arm, "sessions": 0, "converted": 0.0, "revenue": 0.0,
                                            "cost": 0.0, "churned": 0.0, "first_step": step})
        profile = ab_profiles.get(uid)
        if profile is None:
            profile = UserFeatures(first_ts=ts)
            profile.personalization = arm != "control"
        profile, decision = engine.handle(profile, event, ingest_ms=ts)
        ab_profiles[uid] = profile
        if decision.get("personalized"):
            n_checked += 1
            for key, value in explanation_errors(decision).items():
                explanation_max[key] = max(explanation_max[key], value)
        if etype == "purchase":
            stats["revenue"] += float(event["price"])
        if etype == "churn_outcome" and event["churned"]:
            stats["churned"] = 1.0
            if uid in pending:
                pending[uid]["reward"] -= CHURN_PENALTY
        if etype == "session_start":
            finalize(uid)
            served = dict(decision)
            segment = None
            if arm != "control":
                features = decision["features"]
                segmenter.learn_one(features)
                segment = segmenter.predict_one(features)
                p = decision["churn"]["probability"]
                served["segment"] = segment
                served["confidence"] = decision_confidence(p, engine.config.churn_threshold, profile.n_events)
                served["risk"] = p
            rules_action = decision["action"]["name"]
            context = greedy_action = None
            if arm == "personalized+bandit":
                context = _bandit_context(decision, segment, segmenter.n_segments)
                greedy_action = bandit.greedy_one(context)  # what it has learned, apart from exploring
                action, propensity, _ = bandit.choose_one(context)
                served["action"] = {"name": action, "propensity": propensity, "reason": "contextual bandit"}
            if on_decision is not None:
                on_decision(arm, event, served)
            reaction = stream.react(uid, served)
            stats["sessions"] += 1
            stats["cost"] += reaction.cost
            stats["converted"] += float(reaction.converted)
            if segment is not None:
                segment_stats[segment].append((arm, truth.engagement, truth.churn_risk))
            pending[uid] = {"arm": arm, "context": context, "action": served["action"]["name"],
                            "propensity": served["action"]["propensity"], "rules_action": rules_action,
                            "greedy_action": greedy_action,
                            "reward": (reaction.revenue - reaction.cost) / median_price}
    for uid in list(pending):
        finalize(uid)
    elapsed = time.perf_counter() - started
    return {
        "config": asdict(cfg),
        "scenario": {"name": scenario.name, "description": scenario.description,
                     "changes": stream.events_by_phase, "users_total": len(stream.world.users),
                     "items_total": len(stream.world.items)},
        "bucket_size": bucket_size,
        "freeze_step": int(cfg.freeze_at * cfg.events),
        "records": records,
        "variants": variants,
        "user_stats": user_stats,
        "decision_log": decision_log,
        "explanation_max_error": dict(explanation_max),
        "explanations_checked": n_checked,
        "confidence": confidence_records,
        "segments": segment_stats,
        "selection": {
            "churn": {"switches": [s.to_dict() for s in churn_selector.switches], "champion": churn_selector.champion,
                      "selected": churn_selected},
            "sentiment": {"switches": [s.to_dict() for s in sent_selector.switches],
                          "champion": sent_selector.champion},
            "reco": {"switches": [s.to_dict() for s in reco_selector.switches], "champion": reco_selector.champion,
                     "selected_hits": reco_selected},
        },
        "bandit": bandit,
        "elapsed_s": elapsed,
    }
