"""Prometheus metrics of the engine and the gateway, defined in one place.

The engine's metrics live in the process-wide registry (next to bytewax's own
`bytewax_kafka_consumer_lag`) and are served by `serve_engine_metrics`; the gateway's are in
connectors.gateway_metrics, built from the same counting primitives. Model quality is computed over rolling
windows when scraped, and the per-event counters and latency histograms are plain integers kept per thread and
summed when scraped (`ThreadCounts`), so the per-event cost is a few dict updates and deque appends.
"""

from __future__ import annotations

import bisect
import gc
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from river import metrics, stats, utils

from online_models.metrics import roc_auc
from operators.contracts import TOPIC_KIND_OF_TYPE

T = TypeVar("T")
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
QUALITY_WINDOW = 1000
HIT_RATE_USERS = 50_000  # users whose previous top-k is remembered for the hit rate (LRU)

_REASONS: tuple[tuple[str, str], ...] = (
    ("invalid JSON", "invalid_json"),
    ("oversize", "oversize"),
    ("empty record", "empty_record"),
    ("unexpected topic", "unexpected_topic"),
    ("kafka error", "kafka_error"),
    ("must be a JSON object", "not_an_object"),
    ("unknown event type", "unknown_type"),
    ("belongs on the", "wrong_topic"),
    ("missing", "missing_field"),
)


def reason_class(reason: str) -> str:
    """A bounded label for a dead-letter reason (the full reason stays in the record's header).

    >>> reason_class("missing field 'item_id'"), reason_class("field 'price' must be a finite number >= 0")
    ('missing_field', 'invalid_field')
    """
    for needle, label in _REASONS:
        if needle in reason:
            return label
    return "invalid_field"


class ChurnQuality:
    """ROC AUC (online_models.metrics: exact) and log-loss (River's) of churn probabilities over the last `size` labels.

    >>> q = ChurnQuality(); [q.add(p, y) for p, y in [(0.9, True), (0.8, False), (0.7, True), (0.1, False)]] and q.auc()
    0.75
    """

    def __init__(self, size: int = QUALITY_WINDOW) -> None:
        self._log_loss = utils.Rolling(metrics.LogLoss, window_size=size)
        self._pairs: deque[tuple[bool, float]] = deque(maxlen=size)

    def add(self, probability: float, churned: bool) -> None:
        """Record one served probability and the label that followed."""
        self._log_loss.update(churned, probability)
        self._pairs.append((churned, probability))

    def __len__(self) -> int:
        return len(self._pairs)

    def records(self) -> list[tuple[float, bool]]:
        """The window's (probability, churned) pairs, oldest first, in the order `add` takes them."""
        return [(probability, churned) for churned, probability in self._pairs]

    def auc(self) -> float:
        """Exact ROC AUC of the window (ties count one half); NaN until both classes are in it."""
        pairs = list(self._pairs)
        return roc_auc([label for label, _ in pairs], [p for _, p in pairs]) if pairs else math.nan

    def log_loss(self) -> float:
        """Mean log-loss of the window (probabilities clipped to [1e-15, 1 - 1e-15]); NaN when empty."""
        return self._log_loss.get() if self._pairs else math.nan


class RollingShare:
    """The share of true outcomes (a hit, a correct prediction) over the last `size`: River's rolling mean.

    >>> share = RollingShare(size=2); share.add(True); share.add(False); share.add(False); share.get()
    0.0
    """

    def __init__(self, size: int = QUALITY_WINDOW) -> None:
        self._mean = utils.Rolling(stats.Mean, window_size=size)

    def add(self, outcome: bool) -> None:
        """Record one outcome."""
        self._mean.update(float(outcome))

    def __len__(self) -> int:
        return len(self._mean.window)

    def get(self) -> float:
        """The share in the window; NaN when empty."""
        return self._mean.get() if len(self._mean.window) else math.nan


class ThreadCounts:
    """Counts by key, kept in one dict per thread (no lock, no lost update) and summed when read.

    >>> counts = ThreadCounts(); counts.add("a"); counts.add("a", 2.5); counts.totals()
    {'a': 3.5}
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._per_thread: list[dict[Hashable, float]] = []
        self._lock = threading.Lock()  # taken once per thread, and by readers

    def mine(self) -> dict[Hashable, float]:
        """This thread's counts (add to them directly on hot paths)."""
        try:
            return self._local.counts
        except AttributeError:
            counts = self._local.counts = {}
            with self._lock:
                self._per_thread.append(counts)
            return counts

    def add(self, key: Hashable, amount: float = 1) -> None:
        """Count `amount` more under `key`."""
        counts = self.mine()
        counts[key] = counts.get(key, 0) + amount

    def totals(self) -> dict[Hashable, float]:
        """The counts of all threads, summed."""
        totals: dict[Hashable, float] = {}
        with self._lock:
            threads = list(self._per_thread)
        for counts in threads:
            for key, value in list(counts.items()):
                totals[key] = totals.get(key, 0) + value
        return totals


class _CounterFamily:
    """A labelled Prometheus counter backed by `ThreadCounts` (exported at scrape time)."""

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry) -> None:
        self._name, self._documentation, self._labels = name, documentation, labels
        self.counts = ThreadCounts()
        registry.register(self)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, value in sorted(self.counts.totals().items()):
            family.add_metric(list(labels), value)
        yield family


class _DurationHistogram:
    """Histograms of durations (s), one per value of a label, backed by `ThreadCounts`: an observation is a bisect
    and two additions. Registered in `registry` when given (one may be registered in several)."""

    def __init__(self, name: str, documentation: str, label: str, values: tuple[str, ...], buckets: tuple[float, ...],
                 registry: CollectorRegistry | None) -> None:
        self._name, self._documentation, self._label, self._values = name, documentation, label, values
        self._buckets = buckets
        self.counts = ThreadCounts()
        if registry is not None:
            registry.register(self)

    def observe(self, value: str, seconds: float) -> None:
        """Add one observation under label `value`."""
        counts = self.counts.mine()
        bucket = (value, bisect.bisect_left(self._buckets, seconds))  # bucket i: <= buckets[i]; last: +Inf
        counts[bucket] = counts.get(bucket, 0) + 1
        total = (value, "sum")
        counts[total] = counts.get(total, 0) + seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        totals = self.counts.totals()
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for value in self._values:
            cumulative, buckets = 0, []
            for index, bound in enumerate((*self._buckets, math.inf)):
                cumulative += int(totals.get((value, index), 0))
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric([value], buckets, totals.get((value, "sum"), 0.0))
        yield family


class _GcPauseClock:
    """Times each pass of Python's garbage collector (a `gc.callbacks` hook) into a histogram per generation.

    A full pass stops the process for as long as it takes to scan every tracked object that is not frozen
    (pulse.runtime.SurvivorFreezer), which grows with the open WebSocket connections or user profiles.
    """

    def __init__(self) -> None:
        self.pauses = _DurationHistogram("pulse_gc_pause_seconds", "Pauses of the Python garbage collector, by "
                                         "generation (2: full passes, which scan every tracked object).", "generation",
                                         ("0", "1", "2"), LATENCY_BUCKETS_S, None)
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.observe(str(info["generation"]), time.perf_counter() - self._started)


class _PerProcess(Generic[T]):
    """One `make()` per process, made on the first `get()` (thread-safe)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The process's one value."""
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value


_gc_clock = _PerProcess(_GcPauseClock)


def gc_pauses() -> _DurationHistogram:
    """The process's garbage-collector pause histogram (hook installed on first use); register it where needed."""
    return _gc_clock.get().pauses


class EngineMetrics:
    """Counters, latency histograms and rolling model quality of the dataflow process."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        registry.register(gc_pauses())
        self.events = _CounterFamily("pulse_events", "Events read, by topic kind and event type "
                                     "(invalid: type='invalid').", ["topic", "type"], registry)
        self.dead_letters = _CounterFamily("pulse_dead_letters", "Records dead-lettered, by reason class.", ["reason"],
                                           registry)
        self.decisions = _CounterFamily("pulse_decisions", "Decisions made, by chosen action.", ["action"], registry)
        self.latency = _DurationHistogram("pulse_latency_seconds", "Latency per stage: event_to_ingest (producer ts "
                                          "to engine read), ingest_to_decision, event_to_decision.", "stage",
                                          ("event_to_ingest", "ingest_to_decision", "event_to_decision"),
                                          LATENCY_BUCKETS_S, registry)
        self.churn = ChurnQuality()
        self.sentiment = RollingShare()
        self.hits = RollingShare()
        quality = Gauge("pulse_model_quality", f"Rolling model quality over the last {QUALITY_WINDOW} labels "
                        "(NaN until labels arrive).", ["model", "measure"], registry=registry)
        for model, measure, source in (
            ("churn", "auc", self.churn.auc), ("churn", "log_loss", self.churn.log_loss),
            ("sentiment", "accuracy", self.sentiment.get), ("recommender", "hit_rate", self.hits.get),
        ):
            quality.labels(model, measure).set_function(source)
        samples = Gauge("pulse_model_quality_samples", "Labels in each rolling quality window.", ["model"],
                        registry=registry)
        for model, window in (("churn", self.churn), ("sentiment", self.sentiment), ("recommender", self.hits)):
            samples.labels(model).set_function(window.__len__)
        self._drifts = Gauge("pulse_model_drifts", "Upward error drifts detected by ADWIN since start, per model "
                             "(churn and sentiment are retrained from recent data at each).", ["model"],
                             registry=registry)
        self._last_top: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # a user's latest top k
        self._lock = threading.Lock()

    def watch_drift(self, drift_counts: Callable[[], dict[str, int]]) -> None:
        """Export the engine's drift alarm counts (read at scrape time)."""
        for model in ("churn", "sentiment", "recommender"):
            self._drifts.labels(model).set_function(lambda model=model: drift_counts()[model])

    def observe_parsed(self, item: Any) -> None:
        """Count one parse result: an `Accepted` event by topic/type, or a `Rejected` record by reason."""
        event = getattr(item, "event", None)
        if event is None:
            self.events.counts.add(("unknown", "invalid"))
            self.dead_letters.counts.add((reason_class(item.reason),))
        else:
            self.events.counts.add((TOPIC_KIND_OF_TYPE[event["type"]], event["type"]))

    def before_event(self, event: dict[str, Any], engine: Any, profile: Any) -> None:
        """Progressive validation, before `engine` learns from `event` of the user with `profile`.

        A `churn_outcome` scores the churn probability served at the user's latest behavioural event (what a
        site acted on; kept through idle periods by the long-term record); an item interaction is a hit when
        the item was in the user's previous decision's recommendations.
        """
        if event["type"] == "churn_outcome" and profile is not None and profile.personalization:
            served = profile.memory.served_probability
            if served is not None:
                self.churn.add(served, event["churned"])
        item_id = event.get("item_id")
        if item_id is not None and event["type"] in ("click", "add_to_cart", "purchase"):
            with self._lock:
                previous = self._last_top.get(event["user_id"])
            if previous is not None:
                self.hits.add(item_id in previous)

    def after_decision(self, decision: dict[str, Any]) -> None:
        """Count the decision, its stage latencies, its sentiment correctness and remember its top-k."""
        self.decisions.counts.add((decision["action"]["name"],))
        latency, observe = decision["latency_ms"], self.latency.observe
        observe("event_to_ingest", max(latency["event_to_ingest"], 0) / 1000)
        observe("ingest_to_decision", max(latency["ingest_to_decision"], 0) / 1000)
        observe("event_to_decision", max(decision["decided_ts"] - decision["event_ts"], 0) / 1000)
        message = (decision.get("sentiment") or {}).get("message")
        if message and message.get("label") is not None:
            self.sentiment.add((message["score"] > 0) == (message["label"] == "positive"))
        user = decision["user_id"]
        with self._lock:
            if decision.get("forgotten") or not decision["personalized"]:  # the hit rate is the recommender's
                self._last_top.pop(user, None)
                return
            self._last_top[user] = tuple([rec["item_id"] for rec in decision["recommendations"]])
            self._last_top.move_to_end(user)
            if len(self._last_top) > HIT_RATE_USERS:
                self._last_top.popitem(last=False)


_engine_metrics = _PerProcess(EngineMetrics)
_serving_lock = threading.Lock()


def engine_metrics() -> EngineMetrics:
    """The process's engine metrics (created on first use, in the default registry)."""
    return _engine_metrics.get()


_served_ports: set[int] = set()


def serve_engine_metrics(port: int, host: str = "0.0.0.0") -> bool:
    """Serve the process's metrics on http://HOST:PORT/metrics once; port 0 leaves them off. True if served."""
    if port <= 0:
        return False
    engine_metrics()
    with _serving_lock:
        if port not in _served_ports:
            start_http_server(port, addr=host)
            _served_ports.add(port)
    return True
