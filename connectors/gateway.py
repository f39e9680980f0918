"""WebSocket gateway: pushes each user's personalization decisions to browsers as they are made.

Protocol
--------
Connect to ``ws://HOST:PORT/ws``, optionally ``/ws?user_id=U`` to subscribe to user ``U`` at once.
Every frame is a JSON text frame.

Client -> server (one command per message, a JSON object with exactly one command key):

- ``{"subscribe": "U", "token": "T"}``: receive user ``U``'s decisions (at most ``MAX_SUBSCRIPTIONS``
  users per connection; re-subscribing re-sends the stored decision). ``T`` is a user token for ``U``
  (connectors/auth.py, `pulse token U`); ``/ws?user_id=U&token=T`` does the same at connect time.
- ``{"unsubscribe": "U"}``: stop receiving them.
- ``{"ping": ANY}``: liveness probe at the application level.

Server -> client:

- ``{"type": "subscribed", "user_id": U}`` then, when Redis holds one, the stored latest decision
  ``{"type": "decision", "latest": true, "decision": {...}}``; then every new decision
  ``{"type": "decision", "decision": {...}}`` the moment the engine publishes it.
- ``{"type": "unsubscribed", "user_id": U}``.
- ``{"type": "pong", "ping": ANY, "dropped": N}``: ``N`` counts the frames this connection lost
  because it read too slowly.
- ``{"type": "error", "error": "..."}`` for an invalid message or a refused subscription (missing,
  malformed, forged or expired token, or a token for another user); the connection stays open.

Limits: messages above ``MAX_CLIENT_MESSAGE`` bytes close the connection (code 1009); more than
PULSE_GATEWAY_RATE messages per second (bursts of twice that) close it with 1008; a connection without
any subscription for PULSE_GATEWAY_IDLE_S seconds is closed (1000); browsers whose ``Origin`` is not in
PULSE_GATEWAY_ORIGINS (when set) are refused with HTTP 403. Token checks are off only when
PULSE_GATEWAY_SECRET is unset and PULSE_GATEWAY_INSECURE=1.

``GET /healthz`` answers ``200 ok`` over plain HTTP; other paths than ``/ws`` answer 404. The HTTP API,
ingest, metrics and dashboard run on PULSE_HTTP_PORT in the same process (connectors/http_api.py).

Delivery
--------
The engine SETs ``{prefix}:decision:U`` and then PUBLISHes the same JSON on ``{prefix}:decisions:U``.
One Redis pub/sub connection per process pattern-subscribes to ``{prefix}:decisions:*``; the
dispatcher splices each payload, unparsed, into a frame built once and queued to every connection
subscribed to that user (messages nobody wants are dropped). Each connection has a bounded queue
(``PULSE_GATEWAY_QUEUE``) drained by its own sender task; when it is full the *oldest* frame is
dropped, so a slow reader loses stale decisions, never the newest one, and never slows others.

Guarantees are at-most-once per live frame and at-least-once for the latest decision: if a live
decision arrives while the stored one is being read at subscribe time, the stored one is skipped
(the live one is at least as new); a decision published just before the subscription can arrive
twice (as ``latest`` and live). Clients deduplicate by ``decision_id``. When Redis goes away the
gateway keeps serving WebSockets, reconnects with capped exponential backoff and then re-sends
every subscribed user's stored decision as ``latest``, since live ones published meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from connectors.auth import TokenError, read_token
from connectors.backoff import Backoff
from connectors.gateway_metrics import GatewayMetrics
from connectors.http_api import FEED_LIMIT, HttpApi
from operators.privacy import pseudonymize
from pulse.config import Settings
from pulse.runtime import tune_garbage_collector

log = logging.getLogger("pulse.gateway")

MAX_SUBSCRIPTIONS = 16
MAX_CLIENT_MESSAGE = 4096
MAX_USER_ID = 256
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
STARTUP_WAIT_S = 5.0
RESYNC_BATCH = 500
REAP_EVERY_S = 1.0
STOP_WAIT_S = 10.0  # longest wait for each part of a shutdown (closing handshakes, background tasks)

_DECISION = b'{"type":"decision","decision":'
_LATEST = b'{"type":"decision","latest":true,"decision":'
_DECISION_TYPE = b'{"type":"decision"'  # common start of both decision frames


class _Connection(ServerConnection):
    """A WebSocket connection that reference counting alone frees once it is lost.

    Two reference cycles outlive a closed connection otherwise: websockets' parser, a generator that waits
    at its last `yield` for good holding the protocol (about 12 objects), and asyncio's socket transport,
    which holds a bound method of itself (`_read_ready_cb`, 6 more). Only a full garbage-collector pass
    frees them, and with PULSE_GC_FREEZE only the next pass over everything when they were frozen while
    the connection was open. Like websockets' own `keepalive_task = None` here, both are broken when the
    connection is lost: nothing is parsed or read after that.
    """

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.protocol.parser.close()
        if hasattr(self.transport, "_read_ready_cb"):  # asyncio's selector transport
            self.transport._read_ready_cb = None


@dataclass(slots=True)
class _Totals:
    delivered: int = 0
    dropped: int = 0


class _Client:
    """One WebSocket connection: its subscriptions and bounded send queue."""

    __slots__ = ("ws", "queue", "channels", "fetching", "dropped", "totals", "idle_since", "allowance", "checked",
                 "rate")

    def __init__(self, ws: ServerConnection, queue_size: int, totals: _Totals, rate: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self.channels: set[bytes] = set()
        self.fetching: set[bytes] = set()  # channels whose stored decision is being read
        self.dropped = 0
        self.totals = totals
        self.idle_since = time.monotonic()  # since when the connection has had no subscription
        self.rate = rate
        self.allowance = 2.0 * rate  # token bucket of client messages
        self.checked = self.idle_since

    def within_rate(self) -> bool:
        """Take one message from the token bucket (refilled at `rate`/s, capped at twice that)."""
        now = time.monotonic()
        self.allowance = min(2.0 * self.rate, self.allowance + (now - self.checked) * self.rate)
        self.checked = now
        if self.allowance < 1.0:
            return False
        self.allowance -= 1.0
        return True

    def push(self, frame: bytes) -> None:
        """Queue a frame without waiting; when full, drop the oldest queued one."""
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.put_nowait(frame)
            if not self.dropped:
                log.info("client %s reads too slowly: dropping its oldest frames", self.ws.remote_address)
            self.dropped += 1
            self.totals.dropped += 1

    async def send_forever(self) -> None:
        """Drain the queue into the socket until the connection closes."""
        try:
            while True:
                frame = await self.queue.get()
                await self.ws.send(frame, text=True)
                if frame.startswith(_DECISION_TYPE):
                    self.totals.delivered += 1
        except ConnectionClosed:
            pass

    def error(self, message: str) -> None:
        self.push(orjson.dumps({"type": "error", "error": message}))


class Gateway:
    """WebSocket server fed by one Redis pub/sub connection."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._channel_prefix = settings.decision_channel("").encode()
        self._key_prefix = settings.decision_key("").encode()
        self._routes: dict[bytes, set[_Client]] = {}
        self._clients: set[_Client] = set()
        self._totals = _Totals()
        self._connected = asyncio.Event()
        self._server: Server | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._feed: deque[bytes] = deque(maxlen=FEED_LIMIT)  # newest decisions, for the dashboard
        self.metrics = GatewayMetrics(lambda: self.stats)
        origins = [origin.strip() for origin in settings.gateway_origins.split(",") if origin.strip()]
        self._origins: list[str | None] | None = [*origins, None] if origins else None  # None: clients without Origin
        common = {"socket_connect_timeout": 2.0, "socket_keepalive": True}
        self._redis = Redis.from_url(
            settings.redis_url, socket_timeout=5.0, retry=Retry(ExponentialBackoff(cap=0.25), 2), **common
        )
        # Errors surface at once: the dispatcher owns reconnection, backoff and logging.
        self._pubsub_redis = Redis.from_url(settings.redis_url, retry=Retry(NoBackoff(), 0), **common)
        self.http = HttpApi(settings, self._redis, self._feed, self.metrics, lambda: self.stats, lambda: self.port)

    async def start(self) -> None:
        """Bind the WebSocket and HTTP servers and start the dispatcher (waits briefly for Redis, never fails on it).

        Raises ConfigError unless a token secret is set or auth is explicitly off (PULSE_GATEWAY_INSECURE=1).
        """
        self._settings.require_gateway_auth_choice()
        self._server = await serve(
            self._handle,
            self._settings.gateway_host,
            self._settings.gateway_port,
            process_request=self._process_request,
            compression=None,  # per-connection zlib state costs far more memory than it saves here
            max_size=MAX_CLIENT_MESSAGE,
            origins=self._origins,
            create_connection=_Connection,
        )
        await self.http.start()
        self._dispatcher = asyncio.create_task(self._dispatch_forever(), name="pulse-gateway-dispatcher")
        self._reaper = asyncio.create_task(self._reap_idle_forever(), name="pulse-gateway-reaper")
        try:
            await asyncio.wait_for(self._connected.wait(), STARTUP_WAIT_S)
        except TimeoutError:
            log.warning("serving without Redis for now; decisions flow once it is reachable")
        log.info("gateway listening on ws://%s:%d/ws", self._settings.gateway_host, self.port)

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0)."""
        if self._server is None:
            raise RuntimeError("gateway is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def stats(self) -> dict:
        """Connections, subscriptions, decision frames delivered and dropped, Redis link state."""
        return {
            "connections": len(self._clients),
            "subscriptions": sum(len(clients) for clients in self._routes.values()),
            "delivered": self._totals.delivered,
            "dropped": self._totals.dropped,
            "redis_connected": self._connected.is_set(),
        }

    async def stop(self) -> None:
        """Close every client, the server and the Redis connections (nothing to do if it never started)."""
        if self._server is None:
            return
        self._server.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), STOP_WAIT_S)
        except TimeoutError:
            log.warning("some WebSocket connections did not close within %.0fs; stopping anyway", STOP_WAIT_S)
        await self.http.stop()
        tasks = [task for task in (self._dispatcher, self._reaper) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for task in stuck:
                log.warning("background task %s did not stop within %.0fs", task.get_name(), STOP_WAIT_S)
        await self._redis.aclose()
        await self._pubsub_redis.aclose()
        log.info("gateway stopped")

    # -- WebSocket side -------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client(ws, self._settings.gateway_queue, self._totals, self._settings.gateway_rate)
        self._clients.add(client)
        sender = asyncio.create_task(client.send_forever())
        try:
            query = parse_qs(urlsplit(ws.request.path).query)
            for user in query.get("user_id", [])[:1]:
                await self._command(client, "subscribe", user, query.get("token", [None])[0])
            limited = False
            async for message in ws:  # keeps reading after a rate-limit close, so the handshake completes
                if limited:
                    continue
                if not client.within_rate():
                    limited = True
                    self.metrics.refused.labels("rate_limit").inc()
                    self._close_soon(ws, 1008, "rate limit exceeded")
                    continue
                await self._on_message(client, message)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:  # above MAX_CLIENT_MESSAGE
                self.metrics.refused.labels("message_too_big").inc()
        finally:
            self._clients.discard(client)
            for channel in client.channels:
                self._unroute(client, channel)
            sender.cancel()
            await asyncio.wait([sender])

    async def _on_message(self, client: _Client, message: str | bytes) -> None:
        try:
            command = orjson.loads(message)
        except orjson.JSONDecodeError:
            return client.error("invalid JSON")
        token = command.pop("token", None) if isinstance(command, dict) else None
        if not isinstance(command, dict) or len(command) != 1:
            return client.error('expected one command: {"subscribe": U, "token": T}, {"unsubscribe": U} or {"ping": X}')
        (name, arg), = command.items()
        await self._command(client, name, arg, token)

    async def _command(self, client: _Client, name: str, arg: object, token: object = None) -> None:
        if name == "ping":
            client.push(orjson.dumps({"type": "pong", "ping": arg, "dropped": client.dropped}))
        elif name not in ("subscribe", "unsubscribe"):
            client.error(f"unknown command {name!r}")
        elif not isinstance(arg, str) or not 0 < len(arg) <= MAX_USER_ID:
            client.error(f"{name} needs a user id: a non-empty string of at most {MAX_USER_ID} characters")
        elif name == "subscribe":
            await self._subscribe(client, arg, token)
        else:
            self._unsubscribe(client, arg)

    def _token_refusal(self, user: str, token: object) -> str | None:
        """Why `token` does not allow subscribing to `user` (None: it does, or auth is off)."""
        if not self._settings.gateway_secret:
            return None  # only reachable with PULSE_GATEWAY_INSECURE=1 (Settings.require_gateway_auth_choice)
        if token is None:
            return "missing_token"
        try:
            granted = read_token(self._settings.gateway_secret, token)
        except TokenError as exc:
            return str(exc).replace(" ", "_")
        return None if granted == user else "token_for_another_user"

    def _stored_id(self, user: str) -> str:
        """The id the engine stores for `user` (its pseudonym when PULSE_PSEUDONYMIZE_KEY is set)."""
        key = self._settings.pseudonymize_key
        return pseudonymize(user, key) if key else user

    async def _subscribe(self, client: _Client, user: str, token: object) -> None:
        refusal = self._token_refusal(user, token)
        if refusal is not None:
            self.metrics.refused.labels(refusal).inc()
            return client.error(f"subscribe to {user!r} refused: {refusal.replace('_', ' ')} "
                                "(send {\"subscribe\": U, \"token\": T} with a token for U)")
        channel = self._settings.decision_channel(self._stored_id(user)).encode()
        if channel not in client.channels and len(client.channels) >= MAX_SUBSCRIPTIONS:
            return client.error(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        client.push(orjson.dumps({"type": "subscribed", "user_id": user}))
        client.channels.add(channel)
        self._routes.setdefault(channel, set()).add(client)
        client.fetching.add(channel)
        try:
            latest = await self._redis.get(self._settings.decision_key(self._stored_id(user)))
        except RedisError as exc:
            log.warning("cannot read the latest decision of user %r: %s", user, exc)
            latest = None
        if channel in client.fetching:  # no live decision arrived meanwhile
            client.fetching.discard(channel)
            if latest is not None:
                client.push(_LATEST + latest + b"}")

    def _unsubscribe(self, client: _Client, user: str) -> None:
        channel = self._settings.decision_channel(self._stored_id(user)).encode()
        if channel not in client.channels:
            return client.error(f"not subscribed to {user!r}")
        client.channels.discard(channel)
        if not client.channels:
            client.idle_since = time.monotonic()
        self._unroute(client, channel)
        client.push(orjson.dumps({"type": "unsubscribed", "user_id": user}))

    def _unroute(self, client: _Client, channel: bytes) -> None:
        clients = self._routes.get(channel)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._routes[channel]

    # -- Redis side -----------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        """Route pub/sub messages to subscribers; reconnect with capped exponential backoff."""
        pattern = self._settings.decision_channel("*")
        backoff = Backoff(RECONNECT_MIN_S, cap=RECONNECT_MAX_S)
        ever_connected = False
        while True:
            pubsub = self._pubsub_redis.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        self._route(message["channel"], message["data"])
                    elif message["type"] == "psubscribe":
                        log.info("%s Redis pub/sub %s", "reconnected to" if ever_connected else "subscribed to",
                                 pattern)
                        self._connected.set()
                        backoff.reset()
                        if ever_connected:
                            await self._resync()
                        ever_connected = True
            except (RedisError, OSError) as exc:
                delay = backoff.next()
                if self._connected.is_set():
                    log.warning("lost Redis pub/sub (%s); reconnecting", exc)
                else:
                    log.warning("Redis pub/sub unavailable (%s); retrying in %.1fs", exc, delay)
            except Exception:
                delay = backoff.next()
                log.exception("dispatcher failed; restarting it in %.1fs", delay)
            else:
                delay = backoff.next()  # the subscription ended without an error: reconnect as after one
            finally:
                self._connected.clear()
                await pubsub.aclose()
            await asyncio.sleep(delay)

    async def _reap_idle_forever(self) -> None:
        """Close connections that have had no subscription for PULSE_GATEWAY_IDLE_S seconds."""
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            deadline = time.monotonic() - self._settings.gateway_idle_s
            for client in [c for c in self._clients if not c.channels and c.idle_since < deadline]:
                self.metrics.refused.labels("idle").inc()
                self._clients.discard(client)
                self._close_soon(client.ws, 1000, "idle: no subscription")

    def _close_soon(self, ws: ServerConnection, code: int, reason: str) -> None:
        """Start the closing handshake without waiting for it."""
        task = asyncio.create_task(ws.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _route(self, channel: bytes, data: bytes) -> None:
        if b'"forgotten":true' in data:  # an erasure: the dashboard's feed drops the user's decisions too
            user = b'"user_id":' + orjson.dumps(orjson.loads(data)["user_id"])
            kept = [d for d in self._feed if user not in d]
            self._feed.clear()
            self._feed.extend(kept)
        self._feed.append(data)
        self.metrics.decisions_seen.inc()
        clients = self._routes.get(channel)
        if not clients:
            return
        frame = _DECISION + data + b"}"
        for client in clients:
            if client.fetching:
                client.fetching.discard(channel)
            client.push(frame)

    async def _resync(self) -> None:
        """After a reconnect, re-send every subscribed user's stored decision (live ones were missed)."""
        channels = list(self._routes)
        for start in range(0, len(channels), RESYNC_BATCH):
            batch = channels[start : start + RESYNC_BATCH]
            keys = [self._key_prefix + channel[len(self._channel_prefix) :] for channel in batch]
            try:
                values = await self._redis.mget(keys)
            except RedisError as exc:
                log.warning("cannot re-send stored decisions after reconnecting: %s", exc)
                return
            for channel, value in zip(batch, values):
                if value is not None:
                    frame = _LATEST + value + b"}"
                    for client in self._routes.get(channel, ()):
                        client.push(frame)


async def serve_forever(settings: Settings) -> None:
    """Run a gateway until SIGINT or SIGTERM, then stop it cleanly."""
    tune_garbage_collector(0, bool(settings.gc_freeze))
    gateway = Gateway(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before start(): it serves /healthz while it waits for Redis
        loop.add_signal_handler(sig, stopping.set)
    try:
        await gateway.start()
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await gateway.stop()


def run_gateway(settings: Settings) -> None:
    """Blocking entry point of the `pulse gateway` command."""
    asyncio.run(serve_forever(settings))
