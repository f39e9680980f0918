"""12-factor configuration: every setting comes from an environment variable with a documented default.

Each setting is declared once, as a field of `Settings` with its variable, default and meaning;
The configuration table of docs/operations.md is generated from those declarations (`pulse config`), so code and docs
cannot drift apart. Secrets are left out of `repr`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from online_models.recommender import RecommenderConfig

SECRET = "secret"


class ConfigError(ValueError):
    """A configuration variable holds a value Pulse cannot use."""


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """How one setting is configured: its environment variable, default (as written there) and meaning."""

    var: str
    default: str
    doc: str
    secret: bool = False


def setting(var: str, default: str, doc: str, secret: bool = False) -> Any:
    """Declare a `Settings` field read from `var` (default `default`, converted to the field's type)."""
    return dataclasses.field(metadata={"setting": SettingDoc(var, default, doc, secret)}, repr=not secret)


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed view of the environment; build with `Settings.from_env()`.

    >>> Settings.from_env({"PULSE_TOP_K": "5"}).top_k
    5
    >>> "s3cret" in repr(Settings.from_env({"PULSE_GATEWAY_SECRET": "s3cret"}))
    False
    """

    kafka_bootstrap: str = setting("KAFKA_BOOTSTRAP", "127.0.0.1:9092",
        "Kafka bootstrap servers (host:port[,host:port]).")
    redis_url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0",
        "Redis URL for latest decisions and pub/sub.")
    topic_clickstream: str = setting("PULSE_TOPIC_CLICKSTREAM", "clickstream",
        "Input topic of clickstream events.")
    topic_chat: str = setting("PULSE_TOPIC_CHAT", "chat",
        "Input topic of chat events.")
    topic_control: str = setting("PULSE_TOPIC_CONTROL", "control",
        "Input topic of control events (consent, forget_user, churn_outcome).")
    topic_items: str = setting("PULSE_TOPIC_ITEMS", "items",
        "Input topic of catalog events (item_upsert, item_delete), read whole by every worker.")
    topic_outcomes: str = setting("PULSE_TOPIC_OUTCOMES", "outcomes",
        "Output topic: each decision's settled reward (attribution join result).")
    topic_decisions: str = setting("PULSE_TOPIC_DECISIONS", "decisions",
        "Output topic: every decision with its explanation.")
    topic_dead_letter: str = setting("PULSE_TOPIC_DEAD_LETTER", "dead-letter",
        "Output topic: raw invalid events, reason in headers.")
    topic_partitions: int = setting("PULSE_TOPIC_PARTITIONS", "2",
        "Partitions per topic when Pulse creates topics.")
    starting_offset: str = setting("PULSE_STARTING_OFFSET", "earliest",
        "Where the dataflow starts reading without recovery state: earliest|latest.")
    kafka_fetch_wait_ms: int = setting("PULSE_KAFKA_FETCH_WAIT_MS", "5",
        "Longest a consumer fetch waits for data (latency floor on brokers that hold fetches, e.g. "
        "Tansu).")
    replay: int = setting("PULSE_REPLAY", "0",
        "1: the input is recorded history replayed: event timestamps from 1970 on are accepted (live events "
        "must be from 2000 on). 0: live events.")
    max_event_bytes: int = setting("PULSE_MAX_EVENT_BYTES", "65536",
        "Events larger than this are dead-lettered as oversize.")
    top_k: int = setting("PULSE_TOP_K", "10",
        "Recommendations per decision.")
    reco_popularity_half_life_s: float = setting("PULSE_RECO_POPULARITY_HALF_LIFE_S", "604800",
        "Recommender: an interaction's weight in an item's popularity halves every this many seconds.")
    reco_neighbours: int = setting("PULSE_RECO_NEIGHBOURS", "64",
        "Recommender: item-to-item neighbours kept per item (12 bytes each; learned incrementally).")
    reco_context_half_life_s: float = setting("PULSE_RECO_CONTEXT_HALF_LIFE_S", "600",
        "Recommender: a recent item's weight in the user's context fades towards a fifth with this half-life "
        "(seconds).")
    reco_blend_rate: float = setting("PULSE_RECO_BLEND_RATE", "0.05",
        "Recommender: learning rate of the blend weights (learned from which item a user clicks, carts or buys "
        "next); 0: fixed weights.")
    reco_cf_min_strength: float = setting("PULSE_RECO_CF_MIN_STRENGTH", "2",
        "Recommender: interactions at least this strong train the collaborative factors (view 1, click 2, "
        "cart 3, purchase 5).")
    decision_ttl_s: int = setting("PULSE_DECISION_TTL_S", "86400",
        "Idle-user TTL: a user idle this long leaves the dataflow state, and their Redis decision "
        "expires after the same time.")
    explanations_per_user: int = setting("PULSE_EXPLANATIONS_PER_USER", "5",
        "Decisions with their explanations Redis keeps per user (the newest; GET /v1/explanations/ID), for at "
        "most PULSE_DECISION_TTL_S.")
    attribution_window_s: float = setting("PULSE_ATTRIBUTION_WINDOW_S", "1800",
        "Wait window joining outcomes (click, cart, purchase) to the decision before them.")
    model_dir: str = setting("PULSE_MODEL_DIR", ".pulse/models",
        "Directory of model snapshots (`pulse models snapshot|list|rollback`), shared by engine "
        "processes.")
    model_snapshot_s: float = setting("PULSE_MODEL_SNAPSHOT_S", "300",
        "Seconds between automatic model snapshots; 0: only on request.")
    rules_file: str = setting("PULSE_RULES_FILE", "",
        "TOML file of business rules (hot-reloaded); empty: no rules.")
    experiments_file: str = setting("PULSE_EXPERIMENTS_FILE", "",
        "TOML file of the running experiment: arms, their shares and what each changes (hot-reloaded; "
        "docs/experiments.md). Empty: a holdout of PULSE_HOLDOUT_SHARE against everyone else.")
    holdout_share: float = setting("PULSE_HOLDOUT_SHARE", "0.05",
        "Without PULSE_EXPERIMENTS_FILE: share of users (by a salted hash of the user id) in the holdout, who "
        "get the non-personalized decision (popularity, no offers) and against whom uplift is measured; 0: none.")
    experiment_salt: str = setting("PULSE_EXPERIMENT_SALT", "pulse-holdout-1",
        "Salt of the holdout's assignment hash (without PULSE_EXPERIMENTS_FILE); another salt reshuffles users "
        "between the arms.")
    experiment_min_users: int = setting("PULSE_EXPERIMENT_MIN_USERS", "100",
        "Users both arms need before a lift can be shown as significant (GET /v1/experiments, dashboard).")
    experiment_srm_p: float = setting("PULSE_EXPERIMENT_SRM_P", "0.001",
        "The sample-ratio-mismatch alarm fires when the chi-square test of users per arm against the "
        "configured shares gives p below this.")
    experiment_max_users: int = setting("PULSE_EXPERIMENT_MAX_USERS", "1000000",
        "Users per experiment the gateway's live uplift analysis follows (8-16 bytes each); later users are "
        "served as assigned but left out of the analysis.")
    redis_prefix: str = setting("PULSE_REDIS_PREFIX", "pulse",
        "Prefix of Redis keys (PREFIX:decision:USER) and channels (PREFIX:decisions:USER).")
    churn_threshold: float = setting("PULSE_CHURN_THRESHOLD", "0.6",
        "Churn probability at/above which the retention offer is chosen.")
    escalation_threshold: float = setting("PULSE_ESCALATION_THRESHOLD", "-0.5",
        "Recent sentiment at/below which a human agent takes over.")
    churn_horizon_s: int = setting("PULSE_CHURN_HORIZON_S", "0",
        "Horizon of churn labels: a churn_outcome tells whether the user churned within this many seconds of "
        "their latest event; a 'not churned' that arrives earlier is learned once it has passed, so every "
        "label is learned at the same age. 0: every label is learned on arrival.")
    churn_learning_rate: float = setting("PULSE_CHURN_LEARNING_RATE", "0.02",
        "SGD step of the churn model per label when labels are learned on arrival (PULSE_CHURN_HORIZON_S 0).")
    churn_horizon_learning_rate: float = setting("PULSE_CHURN_HORIZON_LEARNING_RATE", "0.002",
        "SGD step of the churn model per label when labels have a horizon: a day's labels are then learned as "
        "blocks of one cohort of decisions (the returns whose horizon passed, then the churns), which a larger "
        "step chases.")
    churn_frequency_prior: float = setting("PULSE_CHURN_FREQUENCY_PRIOR", "1.0",
        "Strength k of the churn model's fixed frequency prior: its logit includes -k * log(visits), so before "
        "any label the odds of churn are 1 / visits^k; labels learn corrections. 0: no prior.")
    churn_step_boost: float = setting("PULSE_CHURN_STEP_BOOST", "5.0",
        "Drift-adaptive churn steps: when the churn model's log-loss per label jumps (a Page-Hinkley test), its "
        "SGD steps are multiplied by this, decaying back to the base step. Labels learned on arrival only "
        "(PULSE_CHURN_HORIZON_S 0): with a horizon, a day's label cohorts make the loss jump without a change, "
        "and steps stay constant. 1: constant steps.")
    churn_boost_decay_labels: float = setting("PULSE_CHURN_BOOST_DECAY_LABELS", "50",
        "Time constant, in labels, of the decay of the churn model's boosted step back to its base step.")
    churn_change_threshold: float = setting("PULSE_CHURN_CHANGE_THRESHOLD", "7.0",
        "Page-Hinkley threshold (nats) of the churn step boost: a change is detected when the log-loss since "
        "its lowest cumulative point exceeds its running mean plus PULSE_CHURN_CHANGE_ALLOWANCE per label by this.")
    churn_change_allowance: float = setting("PULSE_CHURN_CHANGE_ALLOWANCE", "0.1",
        "Log-loss per label above the running mean that the churn change test tolerates (Page-Hinkley delta).")
    long_term_retention_s: int = setting("PULSE_LONG_TERM_RETENTION_S", "63072000",
        "How long after their latest event (default two years) an idle user's long-term record (churn aggregates, "
        "about 210 bytes) is kept once the full profile expired; 0: none, idle users are dropped at "
        "PULSE_DECISION_TTL_S.")
    winback_min_idle_s: int = setting("PULSE_WINBACK_MIN_IDLE_S", "604800",
        "Quiet time after which a user's churn risk is checked (then after 25% more quiet time each time) and "
        "one win_back_offer is sent per quiet stretch once it reaches PULSE_CHURN_THRESHOLD; 0: no win-back.")
    winback_channel: str = setting("PULSE_WINBACK_CHANNEL", "email",
        "Channel named in win-back decisions (how the site delivers them: email, push, ...).")
    offer_min_confidence: float = setting("PULSE_OFFER_MIN_CONFIDENCE", "0.2",
        "Decision confidence below which no offer (retention, discount, win-back) is made: the model knows "
        "too little of the user (cold start).")
    nba_epsilon: float = setting("PULSE_NBA_EPSILON", "0.05",
        "Share of next-best-action choices that explore (logged with their propensity).")
    nba_warmup: int = setting("PULSE_NBA_WARMUP", "1000",
        "Rewards the bandit learns before it replaces the rules as the next-best-action policy.")
    gateway_host: str = setting("PULSE_GATEWAY_HOST", "127.0.0.1",
        "WebSocket gateway bind address.")
    gateway_port: int = setting("PULSE_GATEWAY_PORT", "8765",
        "WebSocket gateway port.")
    gateway_queue: int = setting("PULSE_GATEWAY_QUEUE", "64",
        "Per-client send queue; a slow client loses its oldest queued decisions.")
    seed: int = setting("PULSE_SEED", "7",
        "Seed of the models' random initialisation.")
    recovery_dir: str = setting("PULSE_RECOVERY_DIR", ".pulse/recovery",
        "Bytewax recovery partitions and model checkpoints of `pulse run` (created if missing).")
    snapshot_s: int = setting("PULSE_SNAPSHOT_S", "5",
        "Seconds between recovery snapshots (the epoch length; replay after a crash is at most about "
        "this).")
    backup_s: int = setting("PULSE_BACKUP_S", "30",
        "Seconds older snapshots are kept (set to how often the recovery directory is backed up).")
    startup_retry_s: float = setting("PULSE_STARTUP_RETRY_S", "30",
        "How long `pulse run` retries an unreachable broker (with backoff) before exiting with code "
        "3.")
    gc_gen0: int = setting("PULSE_GC_GEN0", "10000",
        "Allocations between the engine's youngest garbage collections (Python: 700); older "
        "generations follow every 20 and 100 of them, so large per-user state is rescanned rarely. 0: "
        "Python's defaults.")
    gc_freeze: int = setting("PULSE_GC_FREEZE", "1",
        "1: the engine and the gateway freeze the survivors of each full garbage-collector pass out "
        "of the next ones (pulse.runtime.SurvivorFreezer), which then scan what survived since "
        "instead of every open WebSocket or user profile; cycles that became garbage while frozen are "
        "reclaimed each time the memory in use has doubled. 0: Python's behaviour.")
    pseudonymize_key: str = setting("PULSE_PSEUDONYMIZE_KEY", "",
        "When set, user ids are replaced by HMAC-SHA256(key, user_id) before anything is stored.", secret=True)
    metrics_port: int = setting("PULSE_METRICS_PORT", "0",
        "Port of the engine's Prometheus endpoint /metrics (0: off).")
    http_port: int = setting("PULSE_HTTP_PORT", "8080",
        "Gateway HTTP port: dashboard, shop demo, /metrics, /v1 API and ingest (0: any free port).")
    gateway_secret: str = setting("PULSE_GATEWAY_SECRET", "",
        "HMAC-SHA256 secret of the user tokens that WebSocket subscriptions and browser ingest need "
        "(`pulse token`).", secret=True)
    gateway_insecure: int = setting("PULSE_GATEWAY_INSECURE", "0",
        "1 turns token checks off; allowed only while PULSE_GATEWAY_SECRET is unset (local demos, "
        "tests).")
    gateway_origins: str = setting("PULSE_GATEWAY_ORIGINS", "",
        "Comma-separated browser Origins allowed to open WebSockets (empty: any).")
    gateway_rate: int = setting("PULSE_GATEWAY_RATE", "20",
        "Client messages per second per WebSocket (bursts of twice that); faster clients are closed "
        "(1008).")
    gateway_idle_s: int = setting("PULSE_GATEWAY_IDLE_S", "30",
        "A WebSocket without any subscription for this many seconds is closed.")
    operator_token: str = setting("PULSE_OPERATOR_TOKEN", "",
        "Credential of the dashboard, /metrics and /v1/* (Authorization: Bearer, or ?token=).", secret=True)
    engine_metrics: str = setting("PULSE_ENGINE_METRICS", "",
        "Comma-separated engine /metrics URLs that the dashboard summarizes.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `env` (default `os.environ`), converting and validating types."""
        env = os.environ if env is None else env
        values = {}
        for field in fields(cls):
            doc = setting_doc(field.name)
            raw = env.get(doc.var, doc.default)
            convert = {"int": int, "float": float}.get(str(field.type), str)
            try:
                values[field.name] = convert(raw)
            except ValueError:
                raise ConfigError(f"{doc.var}={raw!r} is not a valid {field.type}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values that would make the engine misbehave later."""
        if self.starting_offset not in ("earliest", "latest"):
            raise ConfigError(f"PULSE_STARTING_OFFSET must be earliest or latest, not {self.starting_offset!r}")
        for name in ("topic_partitions", "kafka_fetch_wait_ms", "max_event_bytes", "top_k", "decision_ttl_s",
                     "explanations_per_user", "gateway_queue",
                     "gateway_rate", "gateway_idle_s", "snapshot_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{setting_doc(name).var} must be positive")
        if self.reco_popularity_half_life_s <= 0 or self.reco_context_half_life_s <= 0 or self.reco_neighbours < 1:
            raise ConfigError("PULSE_RECO_POPULARITY_HALF_LIFE_S and PULSE_RECO_CONTEXT_HALF_LIFE_S must be > 0, "
                              "PULSE_RECO_NEIGHBOURS >= 1")
        if not self.reco_blend_rate >= 0:
            raise ConfigError("PULSE_RECO_BLEND_RATE must be >= 0")
        if not 0.0 <= self.nba_epsilon <= 1.0:
            raise ConfigError("PULSE_NBA_EPSILON must be within [0, 1]")
        if self.attribution_window_s <= 0:
            raise ConfigError("PULSE_ATTRIBUTION_WINDOW_S must be positive")
        if not 0.0 <= self.holdout_share <= 1.0:
            raise ConfigError("PULSE_HOLDOUT_SHARE must be within [0, 1]")
        if not self.experiment_salt:
            raise ConfigError("PULSE_EXPERIMENT_SALT must not be empty")
        if not 0.0 < self.experiment_srm_p < 1.0:
            raise ConfigError("PULSE_EXPERIMENT_SRM_P must be within (0, 1)")
        if self.experiment_min_users < 1 or self.experiment_max_users < 1:
            raise ConfigError("PULSE_EXPERIMENT_MIN_USERS and PULSE_EXPERIMENT_MAX_USERS must be positive")
        if not 0.0 <= self.churn_threshold <= 1.0:
            raise ConfigError("PULSE_CHURN_THRESHOLD must be within [0, 1]")
        if not -1.0 <= self.escalation_threshold <= 1.0:
            raise ConfigError("PULSE_ESCALATION_THRESHOLD must be within [-1, 1]")
        if self.backup_s < 0 or self.startup_retry_s < 0 or self.gc_gen0 < 0:
            raise ConfigError("PULSE_BACKUP_S, PULSE_STARTUP_RETRY_S and PULSE_GC_GEN0 must be >= 0")
        for name in ("churn_horizon_s", "long_term_retention_s", "winback_min_idle_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{setting_doc(name).var} must be >= 0")
        for name in ("churn_learning_rate", "churn_horizon_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{setting_doc(name).var} must be positive")
        if not self.churn_frequency_prior >= 0:
            raise ConfigError("PULSE_CHURN_FREQUENCY_PRIOR must be >= 0")
        if not 1.0 <= self.churn_step_boost < float("inf"):
            raise ConfigError("PULSE_CHURN_STEP_BOOST must be a finite number >= 1")
        for name in ("churn_boost_decay_labels", "churn_change_threshold"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{setting_doc(name).var} must be positive")
        if not self.churn_change_allowance >= 0:
            raise ConfigError("PULSE_CHURN_CHANGE_ALLOWANCE must be >= 0")
        if self.long_term_retention_s and self.long_term_retention_s <= self.churn_horizon_s:
            raise ConfigError("PULSE_LONG_TERM_RETENTION_S must exceed PULSE_CHURN_HORIZON_S (held labels wait in it)")
        if not 0.0 <= self.offer_min_confidence <= 1.0:
            raise ConfigError("PULSE_OFFER_MIN_CONFIDENCE must be within [0, 1]")
        for name in ("metrics_port", "http_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{setting_doc(name).var} must be a port number 0..65535")
        for name in ("gateway_insecure", "gc_freeze", "replay"):
            if getattr(self, name) not in (0, 1):
                raise ConfigError(f"{setting_doc(name).var} must be 0 or 1")
        if self.gateway_insecure and self.gateway_secret:
            raise ConfigError("PULSE_GATEWAY_INSECURE=1 is only allowed while PULSE_GATEWAY_SECRET is unset")

    def require_gateway_auth_choice(self) -> None:
        """The gateway runs only with a token secret, or with auth explicitly turned off."""
        if not self.gateway_secret and not self.gateway_insecure:
            raise ConfigError("set PULSE_GATEWAY_SECRET (see `pulse token`), or PULSE_GATEWAY_INSECURE=1 to run "
                              "the gateway without authentication")

    def churn_config(self) -> dict[str, float]:
        """The churn model's settings (horizon, steps, prior, drift-adaptive step), as EngineConfig keywords."""
        return {"churn_horizon_ms": self.churn_horizon_s * 1000, "churn_learning_rate": self.churn_learning_rate,
                "churn_horizon_learning_rate": self.churn_horizon_learning_rate,
                "churn_frequency_prior": self.churn_frequency_prior, "churn_step_boost": self.churn_step_boost,
                "churn_boost_decay_labels": self.churn_boost_decay_labels,
                "churn_change_threshold": self.churn_change_threshold,
                "churn_change_allowance": self.churn_change_allowance}

    def recommender_config(self) -> RecommenderConfig:
        """The recommender's tunables."""
        # Imported here: `pulse` commands that never build an engine need not load numpy and River.
        from online_models.recommender import RecommenderConfig

        return RecommenderConfig(self.reco_popularity_half_life_s, self.reco_neighbours, self.reco_context_half_life_s,
                                 self.reco_blend_rate, self.reco_cf_min_strength)

    @property
    def input_topics(self) -> list[str]:
        """The topics the dataflow consumes."""
        return [self.topic_clickstream, self.topic_chat, self.topic_control]

    def item_key(self, item_id: str) -> str:
        """Redis key holding an item's catalog record."""
        return f"{self.redis_prefix}:item:{item_id}"

    def decision_key(self, user_id: str) -> str:
        """Redis key holding the user's latest decision."""
        return f"{self.redis_prefix}:decision:{user_id}"

    def decision_channel(self, user_id: str) -> str:
        """Redis pub/sub channel carrying the user's decisions."""
        return f"{self.redis_prefix}:decisions:{user_id}"

    def explanations_key(self, user_id: str) -> str:
        """Redis hash of the user's last decisions with their explanations, by decision id."""
        return f"{self.redis_prefix}:explanations:{user_id}"

    def explanation_ids_key(self, user_id: str) -> str:
        """Redis list of the decision ids in `explanations_key`, newest first."""
        return f"{self.redis_prefix}:explanation-ids:{user_id}"

    def explanation_key(self, decision_id: str) -> str:
        """Redis key naming the (stored) user whose explanations hash holds this decision."""
        return f"{self.redis_prefix}:explanation:{decision_id}"


def setting_docs() -> dict[str, SettingDoc]:
    """Every setting's declaration, by field name, in declaration order."""
    return {field.name: field.metadata["setting"] for field in fields(Settings)}


def setting_doc(name: str) -> SettingDoc:
    """The declaration of the setting held by field `name`."""
    return setting_docs()[name]


def settings_table() -> str:
    """Markdown table of every variable, its default and meaning."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    rows += [f"| `{doc.var}` | `{doc.default}` | {doc.doc} |" for doc in setting_docs().values()]
    return "\n".join(rows)
