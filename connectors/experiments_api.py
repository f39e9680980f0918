"""The gateway's live experiment analysis: the outcome log folded into per-arm uplift, at GET /v1/experiments and
as Prometheus metrics.

Where it runs, and why there. Every engine process appends the outcomes it settles to one topic
(PULSE_TOPIC_OUTCOMES), each outcome naming its experiment and arm. A consumer thread in each gateway reads
that whole topic (every partition, from the beginning, without a consumer group) into an
`operators.uplift.UpliftAggregator`. So:

- engines of a cluster are summed exactly: the topic holds every process's outcomes once, and a user's
  outcomes are counted in one place whatever process settled them, so users are counted once across
  processes (per-process counters could not be summed into distinct users);
- nothing in the engine's per-event path changes, and engines keep no analysis state to checkpoint: a
  restarted gateway rebuilds the analysis by re-reading the topic (as long as the topic keeps the outcomes:
  set its retention to cover the experiment);
- several gateways each compute the same analysis from the same log (bucket hashes are deterministic).

Its cost is the consumer thread, which parses and folds each outcome once, and memory is bounded
(operators/uplift.py). The report says how far the consumer is behind the topic
(`source.lag`); figures are final for the outcomes read so far.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from connectors.backoff import Backoff
from operators.experiments import Experiment, ExperimentsFile, default_experiment
from operators.uplift import METRICS, UpliftAggregator
from pulse.config import Settings

log = logging.getLogger("pulse.experiments")

POLL_BATCH = 1000
POLL_WAIT_S = 0.5
LAG_EVERY_S = 5.0
RETRY_MAX_S = 10.0


def experiments_file(settings: Settings) -> ExperimentsFile:
    """The experiment in force: PULSE_EXPERIMENTS_FILE, or the holdout of PULSE_HOLDOUT_SHARE."""
    return ExperimentsFile(settings.experiments_file or None,
                           default_experiment(settings.holdout_share, settings.experiment_salt))


class OutcomeFeed(threading.Thread):
    """Reads the whole outcomes topic into an aggregator, then follows it; never raises (retries, logs)."""

    def __init__(self, settings: Settings, aggregator: UpliftAggregator) -> None:
        super().__init__(name="pulse-experiments-feed", daemon=True)
        self._settings = settings
        self._aggregator = aggregator
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._partitions: list[TopicPartition] = []
        self._positions: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self.invalid = 0
        self.error = ""

    def status(self) -> dict[str, Any]:
        """Where the consumer is: records read, how many are still to read (lag), the last error."""
        with self._lock:
            lag = sum(max(end - self._positions.get(p, 0), 0) for p, end in self._ends.items()) if self._ends else None
            return {"topic": self._settings.topic_outcomes, "partitions": len(self._partitions), "lag": lag,
                    "caught_up": lag == 0, "invalid_records": self.invalid, "error": self.error}

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop reading and close the consumer."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout_s)

    def run(self) -> None:
        consumer = Consumer({
            "bootstrap.servers": self._settings.kafka_bootstrap, "group.id": f"pulse-experiments-{uuid.uuid4().hex}",
            "enable.auto.commit": "false", "fetch.wait.max.ms": "100", "logger": log,
        })
        try:
            if self._assign(consumer):
                self._follow(consumer)
        except Exception:
            log.exception("the experiments feed stopped")
            self.error = "the experiments feed stopped (see the gateway log)"
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> bool:
        """Assign every partition of the topic from the beginning, once it exists (retrying with backoff)."""
        topic, backoff = self._settings.topic_outcomes, Backoff(0.5, cap=RETRY_MAX_S)
        while not self._stopping.is_set():
            try:
                metadata = consumer.list_topics(topic, timeout=2).topics.get(topic)
                if metadata is not None and metadata.error is None and metadata.partitions:
                    self._partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
                    consumer.assign(self._partitions)
                    self.error = ""
                    log.info("reading outcomes topic %s (%d partitions) for the experiments", topic,
                             len(self._partitions))
                    return True
                self.error = f"topic {topic} does not exist yet"
            except KafkaException as exc:
                self.error = f"Kafka unavailable: {exc}"
            self._stopping.wait(backoff.next())
        return False

    def _follow(self, consumer: Consumer) -> None:
        next_lag = 0.0
        while not self._stopping.is_set():
            messages = consumer.consume(POLL_BATCH, POLL_WAIT_S)
            self._fold(messages)
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + LAG_EVERY_S
                self._measure_lag(consumer)

    def _fold(self, messages: Iterable[Any]) -> None:
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self.error = str(error)
                continue
            self.error = ""  # records flow again
            try:
                outcome = orjson.loads(message.value())
                if not isinstance(outcome, dict):
                    raise TypeError("not an object")
                self._aggregator.add(outcome)
            except (ValueError, TypeError, KeyError):
                self.invalid += 1
            with self._lock:
                self._positions[message.partition()] = message.offset() + 1

    def _measure_lag(self, consumer: Consumer) -> None:
        ends = {}
        for partition in self._partitions:
            try:
                _, high = consumer.get_watermark_offsets(partition, timeout=1.0)
            except KafkaException:
                return
            ends[partition.partition] = high
        with self._lock:
            self._ends = ends


class ExperimentsApi:
    """The analysis behind GET /v1/experiments and the `pulse_experiment_*` metrics of one gateway."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.experiments = experiments_file(settings)
        self.aggregator = UpliftAggregator(max_users=settings.experiment_max_users,
                                           min_users=settings.experiment_min_users,
                                           srm_alpha=settings.experiment_srm_p)
        self._settings = settings
        self._feed: OutcomeFeed | None = None
        registry.register(_ExperimentMetrics(self.report))

    def start(self) -> None:
        """Start reading the outcome log."""
        if self._feed is None:
            self._feed = OutcomeFeed(self._settings, self.aggregator)
            self._feed.start()

    def stop(self) -> None:
        """Stop reading it (blocks up to a few seconds: call from a thread)."""
        if self._feed is not None:
            self._feed.stop()

    def report(self) -> dict[str, Any]:
        """The analysis now, with where the consumer stands."""
        configured: Experiment = self.experiments.current()
        source = self._feed.status() if self._feed is not None else {"topic": self._settings.topic_outcomes,
                                                                      "lag": None, "caught_up": False}
        return {"ts": time.time(), "configured": configured.to_dict(), "source": source,
                **self.aggregator.report(configured)}


class _ExperimentMetrics:
    """Prometheus view of the report, computed at scrape time."""

    def __init__(self, report: Any) -> None:
        self._report = report

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        report = self._report()
        arm_labels = ["experiment", "arm"]
        metric_labels = ["experiment", "arm", "metric"]
        users = GaugeMetricFamily("pulse_experiment_users", "Users with a settled decision, per experiment arm.",
                                  labels=arm_labels)
        decisions = GaugeMetricFamily("pulse_experiment_decisions", "Settled decisions per experiment arm.",
                                      labels=arm_labels)
        families = {
            name: GaugeMetricFamily(f"pulse_experiment_{name}", doc, labels=metric_labels) for name, doc in (
                ("metric", "Live metric per arm (see GET /v1/experiments: method.metrics)."),
                ("metric_low", "Lower bound of the metric's 95% interval."),
                ("metric_high", "Upper bound of the metric's 95% interval."),
                ("lift", "Relative lift of the arm over the control arm (arm / control - 1)."),
                ("lift_low", "Lower bound of the lift's 95% interval."),
                ("lift_high", "Upper bound of the lift's 95% interval."),
                ("lift_significant", "1 when the lift's interval excludes 0 and both arms have the minimum users."),
            )
        }
        srm_p = GaugeMetricFamily("pulse_experiment_srm_p_value", "p-value of the sample-ratio-mismatch check "
                                  "(NaN until enough users).", labels=["experiment"])
        srm_alarm = GaugeMetricFamily("pulse_experiment_srm_alarm", "1 when users per arm do not match the "
                                      "configured shares (assignment is broken).", labels=["experiment"])
        outcomes = CounterMetricFamily("pulse_experiment_outcomes", "Outcome records read from the outcome log.")
        outcomes.add_metric([], report["outcomes"])
        for experiment in report["experiments"]:
            name = experiment["name"]
            for arm in experiment["arms"]:
                labels = [name, arm["name"]]
                users.add_metric(labels, arm["users"])
                decisions.add_metric(labels, arm["decisions"])
                for metric in METRICS:
                    value = arm["metrics"][metric]
                    if value is not None:
                        for suffix, key in (("", "value"), ("_low", "low"), ("_high", "high")):
                            families[f"metric{suffix}"].add_metric([*labels, metric], value[key])
                    lift = (arm.get("lift") or {}).get(metric)
                    if lift is not None and lift["relative"] is not None:
                        for suffix, key in (("", "value"), ("_low", "low"), ("_high", "high")):
                            families[f"lift{suffix}"].add_metric([*labels, metric], lift["relative"][key])
                        families["lift_significant"].add_metric([*labels, metric], float(lift["significant"]))
            srm = experiment["srm"]
            if experiment["configured"]:
                p_value = srm.get("p_value")
                srm_p.add_metric([name], float("nan") if p_value is None else p_value)
                srm_alarm.add_metric([name], float(srm["alarm"]))
        yield from (users, decisions, *families.values(), srm_p, srm_alarm, outcomes)
