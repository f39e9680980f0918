"""Throughput benchmark: events/s from Kafka in to decisions out (Redis + decision log), every model learning.

    .venv/bin/python -m bench.throughput [--events 30000] [--warmup-events 30000] [--runs 3] [--quix-python PATH]
    [--json]

Each run preloads the same simulated events (valid clickstream/chat/control events of 2,000 users over
1,000 items) into fresh topics of a local Tansu broker, then lets one pipeline drain them, writing every
decision to a local redis-server (SET latest + SET explanation + PUBLISH, pipelined per batch) and to
the decisions topic. The first `--warmup-events` are not measured: a decision's reward reaches the
next-best-action bandit only when its 30-minute attribution window (in simulated time) closes, so over
the first ~25,000 events few rewards are learned and the bandit still follows the rules; afterwards every
event also settles about one earlier decision, and the models' work per event is about a third higher.
The rate is measured on the output: the times the decisions-topic records are received by this process
(polled every 0.1 s), from the first decision after the warm-up (and never in the first 5%: start-up and
group joins) to the last one; Redis is checked to hold every decision. Over the same window the CPU time
of the pipeline's processes is read from /proc: the cores they kept busy and the events per CPU-second
(how efficiently each process works, apart from how many cores the machine has left for it), and the busy
share of the whole machine (broker, Redis and this reader included). The in-process parts are timed after
the same warm-up. Pipelines, all in the same run on the same servers:

- engine, 1 process: `pulse run` (Bytewax, recovery on, as deployed);
- baseline engine, 1 process: the same from another checkout (`--baseline-code DIR`, e.g. the commit before a
  change in a `git worktree`), so a change's cost is a ratio measured in the same run on the same events;
- engine, 2 processes: a Bytewax cluster `pulse run -i 0|1 -a "127.0.0.1:P1;127.0.0.1:P2"` (one partition each);
- plain loop: the same work in a plain confluent-kafka consumer loop (bench/pipelines.py);
- Quix Streams: the same work as a Quix Streams app (needs a Python with quixstreams: --quix-python,
  default $BENCH_QUIX_PYTHON or ~/.cache/pulse-bench-quix/bin/python; `make bench-quix-venv` creates one);
- the raw parts alone, in this process: Kafka consume, the engine step (parse + learn + decide + explain
  + encode, and the models' handle() alone), Redis pipelined writes, decision-log produce; their
  combined rate 1 / sum(1 / rate) is what a pipeline of these parts could reach on one core. The engine
  step also runs as two copies at once in two processes: against one copy alone, that is what two busy
  processes get from this machine's two cores (the ceiling of the 2-process cluster here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import (
    ROOT,
    CpuMeter,
    add_json_option,
    fmt,
    median,
    on_run_topics,
    print_table,
    run_env,
    servers,
    simulated_events,
    write_json,
)

WARMUP_SHARE = 0.05


# ---------------------------------------------------------------- helpers
def create_topics(env: dict[str, str]) -> None:
    """The run's topics, with explicit retention configs (Quix Streams reads them back)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from pulse.config import Settings

    settings = Settings.from_env(env)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    names = [*settings.input_topics, settings.topic_items, settings.topic_decisions, settings.topic_outcomes,
             settings.topic_dead_letter]
    config = {"retention.ms": "3600000", "retention.bytes": "-1"}
    futures = admin.create_topics([NewTopic(n, settings.topic_partitions, 1, config=config) for n in names])
    for future in futures.values():
        future.result(15)


def preload(env: dict[str, str], events: list) -> None:
    """Produce the events to the run's input topics and wait until they are all acknowledged."""
    from simulator import KafkaEventSink

    sink = KafkaEventSink(env["KAFKA_BOOTSTRAP"])
    for e in on_run_topics(env, events):
        sink.send(e)
    sink.close()


class OutputReader:
    """Reads a topic from the beginning, keeping the wall-clock time (ms) each record was received.

    (Record timestamps are not used: Quix Streams copies the input record's timestamp to its outputs.)

    (High watermarks are not a record count on Tansu, so records are really consumed; that costs little.)
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-reader",
                                   "enable.auto.commit": False, "fetch.wait.max.ms": "100"})
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.stamps: list[int] = []

    def poll(self, seconds: float) -> int:
        """Read for about `seconds`; return the records read so far."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = sum(1 for m in self._consumer.consume(10_000, 0.1) if m.error() is None)
            now_ms = time.time() * 1000.0
            self.stamps += [now_ms] * got
        return len(self.stamps)

    def close(self) -> None:
        self._consumer.close()


def measured_from(n_records: int, warmup: int) -> int:
    """Index of the first measured record: after the warm-up events, never in the first 5% (start-up, joins)."""
    return min(max(warmup, int(n_records * WARMUP_SHARE)), n_records - 2)


def steady_rate(stamps: list[int], start: int) -> float:
    """Records/s between record `start` and the last record."""
    span_ms = stamps[-1] - stamps[start]
    return (len(stamps) - 1 - start) / (span_ms / 1000.0) if span_ms > 0 else float("nan")


def redis_decisions(redis_url: str, prefix: str) -> int:
    """Explanation keys (one per decision) written under the run's prefix."""
    import redis

    client = redis.Redis.from_url(redis_url)
    count = sum(1 for _ in client.scan_iter(match=f"{prefix}:explanation:*", count=10_000))
    client.close()
    return count


def run_pipeline(name: str, commands: list[list[str]], env: dict[str, str], expected: int, warmup: int,
                 timeout_s: float, workdir: Path, code: Path = ROOT) -> dict:
    """Start the pipeline's processes, wait for `expected` decisions in the log, stop them, measure after `warmup`."""
    from pulse.localservers import stop_processes

    topic = env["PULSE_TOPIC_DECISIONS"]
    reader = OutputReader(env["KAFKA_BOOTSTRAP"], topic)
    logs = [open(workdir / f"{name}-{i}.log", "wb") for i in range(len(commands))]
    processes = [subprocess.Popen(cmd, env=env, cwd=code, stdout=log, stderr=subprocess.STDOUT)
                 for cmd, log in zip(commands, logs)]
    meter = CpuMeter([p.pid for p in processes])
    started = time.monotonic()
    try:
        while reader.poll(0.1) < expected:
            meter.sample()
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{name}: only {len(reader.stamps)} of {expected} decisions "
                                   f"after {timeout_s:.0f}s (logs in {workdir})")
            if any(p.poll() not in (None, 0) for p in processes):
                paths = sorted(workdir.glob(f"{name}-*.log"))
                raise RuntimeError(f"{name} exited with {[p.poll() for p in processes]}: "
                                   + "\n".join(path.read_text(errors="replace")[-3000:] for path in paths))
        wall_s = time.monotonic() - started
        meter.sample()
    finally:
        reader.close()
        stop_processes(*processes)
        for log in logs:
            log.close()
    stamps = sorted(reader.stamps)
    in_redis = redis_decisions(env["REDIS_URL"], env["PULSE_REDIS_PREFIX"])
    start = measured_from(len(stamps), warmup)
    rate = steady_rate(stamps, start)
    cpu = meter.between(stamps[start], stamps[-1])
    return {"rate": rate, "decisions": len(stamps), "redis_decisions": in_redis, "wall_s": wall_s, **cpu,
            "events_per_cpu_s": rate / cpu["process_cores"] if cpu["process_cores"] > 0 else float("nan")}


# ---------------------------------------------------------------- the raw parts, in this process
def part_kafka_consume(env: dict[str, str], expected: int) -> float:
    """Consume the preloaded input topics alone (same consumer settings as the engine)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from pulse.config import Settings

    settings = Settings.from_env(env)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-parts",
                         "enable.auto.commit": False, "fetch.wait.max.ms": str(settings.kafka_fetch_wait_ms)})
    metadata = consumer.list_topics(timeout=10)
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in settings.input_topics
                     for p in metadata.topics[t].partitions])
    n, start = 0, time.perf_counter()
    while n < expected:
        n += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
    elapsed = time.perf_counter() - start
    consumer.close()
    return n / elapsed


def engine_step(events: list, warmup: int) -> tuple[float, list]:
    """(engine step rate: parse + UserLogic incl. encode, timed after the first `warmup` events; the timed events'
    decision outputs)."""
    from operators.engine import EngineConfig, PersonalizationEngine
    from operators.parse import EventParser
    from operators.user_state import user_logic_builder

    parser = EventParser({"clickstream": "clickstream", "chat": "chat", "control": "control"}, 65536)
    build = user_logic_builder(PersonalizationEngine(EngineConfig()), None, idle_ttl_s=86400)
    logics: dict = {}
    outputs: list = []

    def step(batch: list) -> None:
        for e in batch:
            accepted = parser.parse(e.value, e.key, e.topic, 0, 0)
            user = accepted.event["user_id"]
            logic = logics.get(user) or logics.setdefault(user, build(None))
            out, discard = logic.on_batch([accepted])
            if discard:
                del logics[user]
            outputs.extend(out)

    step(events[:warmup])
    outputs.clear()
    start = time.perf_counter()
    step(events[warmup:])
    return (len(events) - warmup) / (time.perf_counter() - start), outputs


def part_engine(events: list, warmup: int) -> tuple[float, float, list]:
    """(engine step rate; models-only rate: engine.handle on parsed events; outputs), timed after `warmup` events."""
    from operators.engine import EngineConfig, PersonalizationEngine

    step_rate, outputs = engine_step(events, warmup)
    engine = PersonalizationEngine(EngineConfig())
    parsed = [(orjson.loads(e.value), 0) for e in events]
    profiles: dict = {}

    def handle(batch: list) -> None:
        for event, ingest in batch:
            user = event["user_id"]
            profiles[user], _ = engine.handle(profiles.get(user), event, ingest)

    handle(parsed[:warmup])
    start = time.perf_counter()
    handle(parsed[warmup:])
    models_rate = (len(parsed) - warmup) / (time.perf_counter() - start)
    return step_rate, models_rate, outputs


_PAIR_EVENTS: list = []  # the events of part_engine_pair, inherited by its forked processes


def _forked_step_rate(warmup: int) -> float:
    return engine_step(_PAIR_EVENTS, warmup)[0]


def part_engine_pair(events: list, warmup: int) -> float:
    """Engine step rate of each of two copies running at once in two processes (mean events/s).

    Against one copy alone this shows what two busy processes get from this machine's cores: the
    ceiling of a 2-process cluster here, whatever the dataflow does.
    """
    import multiprocessing

    _PAIR_EVENTS[:] = events
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            rates = pool.map(_forked_step_rate, [warmup, warmup])
    finally:
        _PAIR_EVENTS.clear()
    return sum(rates) / len(rates)


def part_redis(env: dict[str, str], outputs: list) -> float:
    """The engine's Redis sink alone: the same pipelined writes, batches of 1,000 decisions."""
    from connectors.redis_sink import RedisDecisionWriter
    from pulse.config import Settings

    sink = RedisDecisionWriter(Settings.from_env(env))
    start = time.perf_counter()
    for i in range(0, len(outputs), 1000):
        sink.write_batch(outputs[i: i + 1000])
    rate = len(outputs) / (time.perf_counter() - start)
    sink.close()
    return rate


def part_log(env: dict[str, str], outputs: list) -> float:
    """The decision log alone: append every decision to the engine's `RecordLog`, then flush."""
    from connectors.kafka_io import RecordLog

    unread = env["PULSE_TOPIC_OUTCOMES"]  # a topic no pipeline reads
    records = RecordLog(env["KAFKA_BOOTSTRAP"], unread, unread)
    start = time.perf_counter()
    for out in outputs:
        records.decision(out.user_id, out.payload)
    records.flush()
    return len(outputs) / (time.perf_counter() - start)


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000, help="events measured per run")
    parser.add_argument("--warmup-events", type=int, default=30_000,
                        help="events before them, not measured (until then few decisions have settled: see above)")
    parser.add_argument("--runs", type=int, default=3, help="runs per pipeline (median reported)")
    parser.add_argument("--pipelines", nargs="+", default=["parts", "plain", "engine1", "engine2", "quix"],
                        choices=["parts", "plain", "engine1", "baseline", "engine2", "quix"],
                        help="baseline: the 1-process engine from --baseline-code (added when that is given)")
    parser.add_argument("--baseline-code", type=Path, default=None, metavar="DIR",
                        help="another checkout of Pulse (e.g. `git worktree add DIR COMMIT`): its engine runs beside "
                             "this one in every run, on the same events and servers")
    parser.add_argument("--quix-python",
                        default=os.environ.get("BENCH_QUIX_PYTHON",
                                               str(Path.home() / ".cache/pulse-bench-quix/bin/python")),
                        help="a Python with quixstreams installed (skipped when missing)")
    parser.add_argument("--quix-runs", type=int, default=1, help="Quix runs (each waits ~20 s for its group join)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one run may take")
    add_json_option(parser, "throughput")
    args = parser.parse_args(argv)
    if args.baseline_code is not None:
        args.baseline_code = args.baseline_code.resolve()
        if not (args.baseline_code / "flows" / "personalization.py").is_file():
            parser.error(f"--baseline-code {args.baseline_code}: not a Pulse checkout")
        if "baseline" not in args.pipelines:
            args.pipelines.append("baseline")
    elif "baseline" in args.pipelines:
        parser.error("the baseline pipeline needs --baseline-code DIR")

    events = simulated_events(args.warmup_events + args.events)
    expected = len(events)
    warmup = measured_from(expected, args.warmup_events)
    rates: dict[str, list[float]] = {}
    extra: dict[str, list[dict]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    quix_ok = "quix" in args.pipelines and Path(args.quix_python).exists()
    if "quix" in args.pipelines and not quix_ok:
        print(f"quix: skipped ({args.quix_python} not found; `make bench-quix-venv` creates it)")
    try:
        with servers() as (bootstrap, redis_url):
            for run in range(args.runs):
                order = [p for p in args.pipelines if p != "quix" or (quix_ok and run < args.quix_runs)]
                for pipeline in order:
                    env = run_env(bootstrap, redis_url, workdir)
                    create_topics(env)
                    preload(env, events)
                    if pipeline == "parts":
                        consume = part_kafka_consume(env, expected)
                        step, models, outputs = part_engine(events, warmup)
                        pair = part_engine_pair(events, warmup)
                        write = part_redis(env, outputs)
                        log = part_log(env, outputs)
                        for key, value in (("kafka consume", consume), ("engine step (parse+decide+encode)", step),
                                           ("engine step, 2 copies at once (each)", pair),
                                           ("models: engine.handle", models), ("redis pipelined writes", write),
                                           ("decision log produce", log)):
                            rates.setdefault(key, []).append(value)
                        combined = 1.0 / (1 / consume + 1 / step + 1 / write + 1 / log)
                        rates.setdefault("sum of parts (1 core)", []).append(combined)
                        print(f"run {run + 1}: parts: consume {consume:,.0f}, step {step:,.0f} (2 at once: {pair:,.0f} "
                              f"each), models {models:,.0f}, "
                              f"redis {write:,.0f}, log {log:,.0f} -> combined {combined:,.0f} events/s", flush=True)
                        continue
                    code = ROOT
                    if pipeline in ("engine1", "baseline"):
                        commands = [[sys.executable, "-m", "pulse.cli", "run", "-w", "1"]]
                        if pipeline == "baseline":
                            code = args.baseline_code
                            env["PYTHONPATH"] = str(code)
                    elif pipeline == "engine2":
                        from pulse.localservers import free_port

                        addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
                        commands = [[sys.executable, "-m", "pulse.cli", "run", "-w", "1", "-i", str(i), "-a", addresses]
                                    for i in range(2)]
                        from bytewax.recovery import init_db_dir

                        recovery = Path(env["PULSE_RECOVERY_DIR"])
                        recovery.mkdir(parents=True, exist_ok=True)
                        init_db_dir(recovery, 1)  # before both processes start (they would race to create it)
                    elif pipeline == "plain":
                        commands = [[sys.executable, "-m", "bench.pipelines", "plain", str(expected)]]
                    else:
                        env["BENCH_QUIX_STATE_DIR"] = str(workdir / f"quix-{run}")
                        commands = [[args.quix_python, "-m", "bench.pipelines", "quix", str(expected)]]
                    timeout = args.timeout + (60 if pipeline == "quix" else 0)
                    result = run_pipeline(f"{pipeline}-{run}", commands, env, expected, warmup, timeout, workdir, code)
                    rates.setdefault(pipeline, []).append(result["rate"])
                    extra.setdefault(pipeline, []).append(result)
                    print(f"run {run + 1}: {pipeline}: {result['rate']:,.0f} events/s "
                          f"({result['decisions']} decisions in the log, {result['redis_decisions']} in Redis, "
                          f"{result['wall_s']:.1f}s wall; {result['process_cores']:.2f} cores, "
                          f"{result['events_per_cpu_s']:,.0f} events per CPU-s, "
                          f"machine {result['machine_busy']:.0%} busy)",
                          flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    med = {k: median(v) for k, v in rates.items()}
    labels = {"plain": "plain confluent-kafka loop (1 process)", "engine1": "engine: pulse run, 1 process",
              "baseline": f"baseline engine ({args.baseline_code}), 1 process",
              "engine2": "engine: pulse run, 2 processes (cluster)", "quix": "Quix Streams app (1 process)"}
    plain = med.get("plain")
    parts_sum = med.get("sum of parts (1 core)")
    cpu = {name: {measure: median(run[measure] for run in runs)
                  for measure in ("process_cores", "events_per_cpu_s", "machine_busy")} for name, runs in extra.items()}
    rows = []
    for key, value in med.items():
        used = cpu.get(key)
        rows.append([labels.get(key, "part: " + key if key != "sum of parts (1 core)" else key), fmt(value),
                     len(rates[key]),
                     f"{value / plain:.2f}" if plain else "-", f"{value / parts_sum:.2f}" if parts_sum else "-",
                     f"{used['process_cores']:.2f}" if used else "-", fmt(used["events_per_cpu_s"]) if used else "-",
                     f"{used['machine_busy']:.0%}" if used else "-"])
    print_table(f"Throughput: {expected - warmup:,} events measured per run after {warmup:,} warm-up events, "
                "median events/s; CPU of the pipeline's processes and "
                "busy share of the whole machine over the same steady window",
                ["pipeline", "events/s", "runs", "vs plain loop", "vs sum of parts", "cores used", "events per CPU-s",
                 "machine busy"], rows)
    targets = {}
    if "engine1" in med and "baseline" in med:
        ratios = [a / b for a, b in zip(rates["engine1"], rates["baseline"])]
        print(f"engine / baseline engine, 1 process: {med['engine1'] / med['baseline']:.3f}x of the medians "
              f"(per run: {', '.join(f'{r:.3f}' for r in ratios)})")
        targets["engine_ge_90pct_of_baseline"] = med["engine1"] >= 0.9 * med["baseline"]
    if "engine1" in med:
        targets["engine_1proc_ge_30k"] = med["engine1"] >= 30_000
        if plain:
            targets["engine_ge_70pct_of_plain_loop"] = med["engine1"] >= 0.7 * plain
        if "quix" in med:
            targets["engine_beats_quix"] = med["engine1"] > med["quix"]
        if "engine2" in med:
            scale = med["engine2"] / med["engine1"]
            targets["two_processes_ge_1_7x"] = scale >= 1.7
            efficiency = cpu["engine2"]["events_per_cpu_s"] / cpu["engine1"]["events_per_cpu_s"]
            print(f"2-process scaling: {scale:.2f}x; events per CPU-second, 2 processes vs 1: {efficiency:.2f}x "
                  f"(machine {cpu['engine2']['machine_busy']:.0%} busy with 2 processes)")
            pair = med.get("engine step, 2 copies at once (each)")
            if pair:
                step = med["engine step (parse+decide+encode)"]
                print(f"this machine's ceiling for 2 processes: 2 x {pair / step:.2f} = {2 * pair / step:.2f}x "
                      f"(the engine step, two copies at once)")
    for name, ok in targets.items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    data = {"events": expected, "warmup_events": warmup, "runs": args.runs, "median_events_per_s": med,
            "all_runs": rates, "median_cpu": cpu, "details": extra, "targets": targets, "cpus": os.cpu_count()}
    if args.json is not None:
        write_json("throughput", data, args.json or None)
    return data


if __name__ == "__main__":
    main()
