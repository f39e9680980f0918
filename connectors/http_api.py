"""The gateway's HTTP side (aiohttp, on PULSE_HTTP_PORT): dashboard, shop demo, /metrics, /v1 API and ingest.

Routes (operator = PULSE_OPERATOR_TOKEN as `Authorization: Bearer T` or `?token=T`; user = a user token
from `pulse token`, see connectors/auth.py):

- ``GET /`` (operator): the live dashboard; ``GET /shop.html``, ``/*.js``, ``/*.css``: public static files of web/.
- ``GET /client-config.json``: where browsers find the WebSocket (``{"ws_port": P, "ws_path": "/ws"}``).
- ``GET /healthz``: ``ok``.
- ``GET /metrics`` (operator): the gateway's Prometheus metrics.
- ``POST /v1/events`` (operator, or a user token for events of that user only): one JSON event or a JSON
  array of at most ``MAX_BATCH``. Each is validated and produced to its topic (key user_id). Answers 200
  with ``{"accepted": N, "rejected": M, "results": [{"index", "status": "accepted", "event_id", "topic"} |
  {"index", "status": "rejected"|"failed", "error"}]}``; 400 when the body is not UTF-8 JSON; 413 above
  ``MAX_BODY_BYTES``. Every /v1 error is a JSON object ``{"error": "..."}``.
- ``GET /v1/decisions/{user_id}`` (operator, or that user's token): the latest decision with its
  explanation; 404 when none is stored; 401 without a valid credential, 403 with another user's token.
- ``GET /v1/explanations/{decision_id}`` (operator): that decision with its explanation (one of its user's
  last PULSE_EXPLANATIONS_PER_USER, kept for PULSE_DECISION_TTL_S; connectors/redis_sink.py); 404 when
  unknown, expired, erased or made without consent.
- ``GET /v1/feed?limit=N`` (operator): the newest decisions seen on pub/sub, newest first.
- ``GET /v1/stats`` (operator): the gateway's counters plus a summary of every engine's metrics
  (PULSE_ENGINE_METRICS), which the dashboard polls.
- ``GET /v1/experiments`` (operator): live uplift per experiment arm from the outcome log, with intervals,
  lifts over the control and the sample-ratio check (connectors/experiments_api.py, docs/experiments.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from confluent_kafka import KafkaError, Message
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.exceptions import RedisError

from connectors.auth import TokenError, operator_allowed, read_token
from connectors.experiments_api import ExperimentsApi
from connectors.gateway_metrics import GatewayMetrics
from connectors.producer import PulseProducer, check_event
from operators.contracts import InvalidEvent, utf8_error
from operators.privacy import pseudonymize
from pulse.config import Settings

log = logging.getLogger("pulse.http")

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
STATIC_NAME = re.compile(r"^[a-z0-9-]+\.(html|js|css)$")
PRIVATE_PAGES = {"dashboard.html"}
MAX_BATCH = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024
DELIVERY_TIMEOUT_S = 5.0
ENGINE_SCRAPE_TIMEOUT_S = 1.0
FEED_LIMIT = 200
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _raw_json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):]
    return request.query.get("token")


class HttpApi:
    """aiohttp application bound to a gateway's Redis client, decision feed, stats and metrics."""

    def __init__(self, settings: Settings, redis: Redis, feed: deque[bytes], metrics: GatewayMetrics,
                 stats: Callable[[], dict[str, Any]], ws_port: Callable[[], int]) -> None:
        self._settings = settings
        self._redis = redis
        self._feed = feed
        self._metrics = metrics
        self._stats = stats
        self._ws_port = ws_port
        self._producer: PulseProducer | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.experiments = ExperimentsApi(settings, metrics.registry)
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the HTTP server on PULSE_GATEWAY_HOST:PULSE_HTTP_PORT."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._count])
        app.add_routes([
            web.get("/", self._dashboard), web.get("/healthz", self._healthz),
            web.get("/client-config.json", self._client_config), web.get("/metrics", self._metrics_text),
            web.post("/v1/events", self._ingest), web.get("/v1/decisions/{user_id}", self._decision),
            web.get("/v1/explanations/{decision_id}", self._explanation), web.get("/v1/feed", self._feed_json),
            web.get("/v1/stats", self._stats_json), web.get("/v1/experiments", self._experiments_json),
            web.get("/{name}", self._static),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.gateway_host, self._settings.http_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.experiments.start()
        log.info("HTTP API and dashboard on http://%s:%d/", self._settings.gateway_host, self.port)

    async def stop(self) -> None:
        """Close the server, the engine scraper and the Kafka producer (delivering what it holds, then releasing it:
        a stopped API may outlive its broker, and a kept producer would go on reconnecting to it)."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        await asyncio.to_thread(self.experiments.stop)
        if self._producer is not None:
            holder, self._producer = [self._producer], None
            await asyncio.to_thread(_close_taken, holder)

    # -- auth -----------------------------------------------------------------------------

    def _is_operator(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization")
        return operator_allowed(self._settings.operator_token, bool(self._settings.gateway_insecure),
                                header, request.query.get("token"))

    def _token_user(self, request: web.Request) -> str | None:
        """The user of a valid user token in the request, if any."""
        token = _presented_token(request)
        if not token or not self._settings.gateway_secret:
            return None
        try:
            return read_token(self._settings.gateway_secret, token)
        except TokenError:
            return None

    @staticmethod
    def _denied() -> web.Response:
        return _json({"error": "operator credential required (Authorization: Bearer TOKEN or ?token=TOKEN)"}, 401)

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._metrics.http.labels(route, str(exc.status)).inc()
            if exc.status >= 400 and request.path.startswith("/v1/"):  # the API answers errors in JSON
                return _json({"error": _http_error(exc)}, exc.status)
            raise
        self._metrics.http.labels(route, str(response.status)).inc()
        return response

    # -- pages ----------------------------------------------------------------------------

    async def _dashboard(self, request: web.Request) -> web.StreamResponse:
        if not self._is_operator(request):
            return web.Response(status=401,
                                text="Pulse dashboard: open /?token=OPERATOR_TOKEN (PULSE_OPERATOR_TOKEN)\n")
        return web.FileResponse(WEB_DIR / "dashboard.html", headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = WEB_DIR / name
        if not STATIC_NAME.match(name) or name in PRIVATE_PAGES or not path.is_file():
            return web.Response(status=404, text="not found\n")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _client_config(self, _request: web.Request) -> web.Response:
        return _json({"ws_port": self._ws_port(), "ws_path": "/ws"})

    async def _metrics_text(self, request: web.Request) -> web.Response:
        if not self._is_operator(request):
            return self._denied()
        return web.Response(body=generate_latest(self._metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- ingest ---------------------------------------------------------------------------

    async def _ingest(self, request: web.Request) -> web.Response:
        operator = self._is_operator(request)
        user = None if operator else self._token_user(request)
        if not operator and user is None:
            return _json({"error": "credential required: an operator token, or a user token (pulse token USER)"}, 401)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"body is not JSON: {utf8_error(raw) or exc}"}, 400)
        events = body if isinstance(body, list) else [body]
        if len(events) > MAX_BATCH:
            return _json({"error": f"at most {MAX_BATCH} events per request"}, 413)
        loop = asyncio.get_running_loop()
        results: list[dict[str, Any]] = []
        pending: list[tuple[dict[str, Any], asyncio.Future[str | None]]] = []
        for index, event in enumerate(events):
            result: dict[str, Any] = {"index": index}
            results.append(result)
            try:
                kind, _ = check_event(event, self._settings.max_event_bytes)
                if user is not None and event["user_id"] != user:
                    raise InvalidEvent("the user token is for another user")
            except InvalidEvent as exc:
                result.update(status="rejected", error=str(exc))
                self._metrics.ingested.labels("rejected", "unknown").inc()
                continue
            done: asyncio.Future[str | None] = loop.create_future()
            try:
                result.update(event_id=event["event_id"], topic=self.producer.send(event, _resolver(loop, done)))
            except Exception as exc:  # noqa: BLE001 - the producer's local errors become per-item results
                done.set_result(str(exc))
            pending.append((result, done))
            result["kind"] = kind
        if pending:
            await asyncio.to_thread(self.producer.flush, DELIVERY_TIMEOUT_S)
            for result, done in pending:
                kind = result.pop("kind")
                error = done.result() if done.done() else "delivery to Kafka timed out"
                result["status"] = "failed" if error else "accepted"
                if error:
                    result["error"] = error
                self._metrics.ingested.labels(result["status"], kind).inc()
        accepted = sum(r["status"] == "accepted" for r in results)
        return _json({"accepted": accepted, "rejected": len(results) - accepted, "results": results})

    @property
    def producer(self) -> PulseProducer:
        """The Kafka producer, created on first use (the gateway runs without Kafka otherwise)."""
        if self._producer is None:
            self._producer = PulseProducer(settings=self._settings)
        return self._producer

    # -- reads ----------------------------------------------------------------------------

    async def _decision(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        if not self._is_operator(request):
            token_user = self._token_user(request)
            if token_user is None:
                return _json({"error": "operator token or this user's token required"}, 401)
            if token_user != user_id:
                return _json({"error": "this user token is for another user"}, 403)
        key = self._settings.pseudonymize_key
        stored_id = pseudonymize(user_id, key) if key else user_id
        return await self._redis_json(self._settings.decision_key(stored_id), f"no decision for user {user_id!r}")

    async def _explanation(self, request: web.Request) -> web.Response:
        if not self._is_operator(request):
            return self._denied()
        decision_id = request.match_info["decision_id"]
        settings = self._settings
        try:
            user = await self._redis.get(settings.explanation_key(decision_id))
            value = None if user is None else await self._redis.hget(settings.explanations_key(user.decode()),
                                                                     decision_id)
        except RedisError as exc:
            return _json({"error": f"Redis unavailable: {exc}"}, 503)
        return _json({"error": f"no decision {decision_id!r}"}, 404) if value is None else _raw_json(value)

    async def _redis_json(self, key: str, missing: str) -> web.Response:
        try:
            value = await self._redis.get(key)
        except RedisError as exc:
            return _json({"error": f"Redis unavailable: {exc}"}, 503)
        return _json({"error": missing}, 404) if value is None else _raw_json(value)

    async def _feed_json(self, request: web.Request) -> web.Response:
        if not self._is_operator(request):
            return self._denied()
        try:
            limit = min(max(int(request.query.get("limit", "50")), 1), FEED_LIMIT)
        except ValueError:
            return _json({"error": "limit must be an integer"}, 400)
        newest = list(self._feed)[-limit:][::-1]
        return _raw_json(b"[" + b",".join(newest) + b"]")

    async def _stats_json(self, request: web.Request) -> web.Response:
        if not self._is_operator(request):
            return self._denied()
        urls = [url.strip() for url in self._settings.engine_metrics.split(",") if url.strip()]
        texts = await asyncio.gather(*(self._scrape(url) for url in urls))
        errors = [f"{url}: {text}" for url, (ok, text) in zip(urls, texts) if not ok]
        summary = summarize_engine_metrics([text for ok, text in texts if ok])
        return _json({"ts": time.time(), "gateway": self._stats(), "engine": summary, "engine_errors": errors,
                      "ingest": _samples(generate_latest(self._metrics.registry).decode(), "pulse_ingest_events")})

    async def _experiments_json(self, request: web.Request) -> web.Response:
        if not self._is_operator(request):
            return self._denied()
        return _json(self.experiments.report())

    async def _scrape(self, url: str) -> tuple[bool, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ENGINE_SCRAPE_TIMEOUT_S))
        try:
            async with self._session.get(url) as response:
                return response.status == 200, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, str(exc) or type(exc).__name__


def _http_error(exc: web.HTTPException) -> str:
    """One line saying what aiohttp refused (its own text, or the status's reason)."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"body larger than {MAX_BODY_BYTES} bytes"
    text = (exc.text or "").strip()
    return text if text and not text.startswith(str(exc.status)) else exc.reason


def _resolver(loop: asyncio.AbstractEventLoop,
              done: asyncio.Future[str | None]) -> Callable[[KafkaError | None, Message], None]:
    """A delivery callback (run on the producer's thread) that resolves `done` with None or the error text."""

    def resolve(error: KafkaError | None, _message: Message) -> None:
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None if error is None else str(error)))

    return resolve


def _samples(text: str, family: str) -> dict[str, float]:
    """Samples of one metric family keyed by their label values joined with '/'."""
    out: dict[str, float] = {}
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out["/".join(sample.labels.values())] = sample.value
    return out


def summarize_engine_metrics(texts: list[str]) -> dict[str, Any]:
    """Merge engines' Prometheus texts: counters, drift alarms and histogram buckets summed, quality averaged."""
    counters: dict[str, dict[str, float]] = {"events": {}, "dead_letters": {}, "decisions": {}}
    names = {"pulse_events_total": "events", "pulse_dead_letters_total": "dead_letters",
             "pulse_decisions_total": "decisions"}
    latency: dict[str, dict[str, Any]] = {}
    quality: dict[str, list[float]] = {}
    drifts: dict[str, float] = {}
    lag = 0.0
    for text in texts:
        for metric in text_string_to_metric_families(text):
            for sample in metric.samples:
                labels = sample.labels
                if sample.name in names:
                    bucket = counters[names[sample.name]]
                    key = "/".join(labels.values())
                    bucket[key] = bucket.get(key, 0.0) + sample.value
                elif sample.name.startswith("pulse_latency_seconds"):
                    stage = latency.setdefault(labels["stage"], {"buckets": {}, "count": 0.0, "sum": 0.0})
                    if sample.name.endswith("_bucket"):
                        stage["buckets"][labels["le"]] = stage["buckets"].get(labels["le"], 0.0) + sample.value
                    elif sample.name.endswith("_count"):
                        stage["count"] += sample.value
                    elif sample.name.endswith("_sum"):
                        stage["sum"] += sample.value
                elif sample.name == "pulse_model_quality" and sample.value == sample.value:  # skip NaN
                    quality.setdefault(f"{labels['model']}.{labels['measure']}", []).append(sample.value)
                elif sample.name == "pulse_model_drifts":
                    drifts[labels["model"]] = drifts.get(labels["model"], 0.0) + sample.value
                elif sample.name == "bytewax_kafka_consumer_lag":
                    lag += sample.value
    for stage in latency.values():
        stage["buckets"] = sorted(([_le(le), n] for le, n in stage["buckets"].items()), key=lambda pair: pair[0])
    return {**counters, "latency": latency, "consumer_lag": lag, "engines": len(texts), "drifts": drifts,
            "quality": {name: sum(values) / len(values) for name, values in quality.items()}}


def _le(bound: str) -> float:
    return float("inf") if bound == "+Inf" else float(bound)


def _close_taken(holder: list[PulseProducer]) -> None:
    """Take the producer out of `holder`, then close it: the executor's work item, which may outlive the await that
    ran it, holds only the empty list, so the producer is released as soon as it is closed."""
    holder.pop().close()
