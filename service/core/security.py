"""Access control (docs/security.md): optional API keys, the CORS allow-list, WebSocket origins.

With ``SKELACT_API_KEYS`` set, every route needs a key except the open ones (``OPEN_PATHS``: the
health probes and the browser page with its static files, which hold no data; the API calls the
page makes carry the key). ``/health/ready`` answers everyone with its status, readiness and reason
(kubelets and load balancers probe without a key) and only callers with a key with the model and
pose details (`authenticated`). The check is ASGI middleware in front of the router, so a route
added later is protected without doing anything.

* HTTP: header ``X-API-Key``, or ``Authorization: Bearer <key>`` (what Prometheus and most HTTP
  clients send). Missing: 401 ``unauthorized``; wrong: 403 ``forbidden``.
* WebSocket: header ``X-API-Key`` or ``Authorization: Bearer``, query ``?api_key=``, or -- to keep
  the key out of URLs and access logs -- a first text message ``{"type": "auth", "api_key": "..."}`` within
  ``read_timeout_s``, after which the stream starts as usual (``hello``). A refused WebSocket is
  accepted, gets ``{"type": "error", "code": "unauthorized"|"forbidden", ...}`` and is closed with
  1008 (policy violation) and a reason.

Keys are compared in constant time. With ``SKELACT_CORS_ORIGINS`` set, browsers on those origins
may call the API (CORS) and a WebSocket whose ``Origin`` is neither listed nor the service's own
host is refused (1008): browsers send cookies and open WebSockets cross-site without CORS.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.config import Settings
from service.core.errors import CloseCode, error_body
from service.core.limits import RequestLimitsMiddleware

log = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"
OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/"})
OPEN_PREFIXES = ("/static/",)
AUTHENTICATED = "skelact.authenticated"  # scope key: the caller sent a valid key (or none is needed)


def is_open(path: str) -> bool:
    """Routes that never need a key (the health probes and the harmless browser page)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def authenticated(conn: HTTPConnection) -> bool:
    """The caller may see details on an open route: it sent a valid key, or keys are off."""
    return bool(conn.scope.get(AUTHENTICATED, True))


def given_key(headers: Headers) -> str | None:
    """The key a request carries: ``X-API-Key``, else ``Authorization: Bearer <key>``."""
    key = headers.get(API_KEY_HEADER)
    if key is not None:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_matches(given: str, keys: list[str]) -> bool:
    """Constant-time comparison against every accepted key."""
    ok = False
    raw = given.encode("utf-8", "replace")
    for k in keys:
        ok |= hmac.compare_digest(raw, k.encode("utf-8", "replace"))
    return ok


def _same_host(origin: str, host: str | None) -> bool:
    """The page that opens the socket was served by this service (ports may differ behind a proxy)."""
    if not host:
        return False
    origin_host = urlsplit(origin).hostname
    return origin_host is not None and origin_host == urlsplit(f"//{host}").hostname


class AccessMiddleware:
    """API keys for HTTP and WebSocket routes, and the WebSocket origin allow-list (pure ASGI)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def keys(self) -> list[str]:
        return [k.get_secret_value() for k in self.settings.api_keys if k.get_secret_value()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if kind == "websocket" and not self.origin_allowed(headers):
            origin = headers.get("origin", "")
            await refuse_websocket(
                receive, send, "forbidden_origin", f"origin {origin!r} is not allowed (SKELACT_CORS_ORIGINS)"
            )
            return
        keys = self.keys()
        if not keys or is_open(scope["path"]):
            if keys:
                given = given_key(headers)
                scope[AUTHENTICATED] = given is not None and key_matches(given, keys)
            await self.app(scope, receive, send)
            return
        if kind == "http":
            await self._http(scope, receive, send, headers, keys)
        else:
            await self._websocket(scope, receive, send, headers, keys)

    def origin_allowed(self, headers: Headers) -> bool:
        allowed = self.settings.cors_origins
        origin = headers.get("origin")
        if not allowed or origin is None or "*" in allowed:
            return True
        return origin.rstrip("/") in {o.rstrip("/") for o in allowed} or _same_host(
            origin, headers.get("host")
        )

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, keys: list[str]
    ) -> None:
        given = given_key(headers)
        if given is not None and key_matches(given, keys):
            await self.app(scope, receive, send)
            return
        if not given:
            status, body = (
                401,
                error_body(
                    "unauthorized",
                    "an API key is required",
                    "send it in the X-API-Key header (or Authorization: Bearer <key>)",
                ),
            )
        else:
            status, body = 403, error_body("forbidden", "invalid API key", "check the key you send")
        response = JSONResponse(
            body, status_code=status, headers={"WWW-Authenticate": 'ApiKey header="X-API-Key", Bearer'}
        )
        await response(scope, receive, send)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, keys: list[str]
    ) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = given_key(headers) or next(iter(query.get("api_key", [])), None)
        if given is not None:
            if key_matches(given, keys):
                await self.app(scope, receive, send)
            else:
                await refuse_websocket(receive, send, "forbidden", "invalid API key")
            return
        # no key in the handshake: accept, and expect {"type": "auth", "api_key": ...} first
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        try:
            msg = await asyncio.wait_for(receive(), self.settings.read_timeout_s)
        except TimeoutError:
            await _close_with_error(
                send, "unauthorized", "no API key: send X-API-Key, ?api_key= or an auth message"
            )
            return
        if msg["type"] == "websocket.disconnect":
            return
        key = _auth_message_key(msg)
        if key is None:
            await _close_with_error(
                send,
                "unauthorized",
                'API key required: send X-API-Key, ?api_key= or first {"type": "auth", "api_key": "..."}',
            )
            return
        if not key_matches(key, keys):
            await _close_with_error(send, "forbidden", "invalid API key")
            return
        await self.app(scope, _replay_connect(receive), _skip_accept(send))


def _auth_message_key(msg: Message) -> str | None:
    text = msg.get("text")
    if text is None or len(text) > 4096:
        return None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(raw, dict) and raw.get("type") == "auth" and isinstance(raw.get("api_key"), str):
        return str(raw["api_key"])
    return None


def _replay_connect(receive: Receive) -> Receive:
    """The app sees the connection from its start (it was accepted here already)."""
    pending: list[Message] = [{"type": "websocket.connect"}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def _skip_accept(send: Send) -> Send:
    async def forward(msg: Message) -> None:
        if msg["type"] == "websocket.accept":
            return
        await send(msg)

    return forward


async def _close_with_error(send: Send, code: str, message: str) -> None:
    await send(
        {"type": "websocket.send", "text": json.dumps({"type": "error", "code": code, "message": message})}
    )
    await send({"type": "websocket.close", "code": int(CloseCode.POLICY_VIOLATION), "reason": message[:120]})


async def refuse_websocket(receive: Receive, send: Send, code: str, message: str) -> None:
    """Accept (so the client sees a reason), send an error message, close with 1008."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await _close_with_error(send, code, message)


# ----------------------------------------------------------------------------- logs

_KEY_IN_URL = re.compile(r"(api_key=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    return _KEY_IN_URL.sub(r"\1***", text)


class RedactApiKeys(logging.Filter):
    """Hide ``?api_key=`` values in log lines (uvicorn logs WebSocket URLs with their query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "api_key=" in record.msg:
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "api_key=" in a for a in args):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        return True


def install_log_redaction(loggers: tuple[str, ...] = ("uvicorn.access", "uvicorn.error", "uvicorn")) -> None:
    for name in loggers:
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactApiKeys) for f in lg.filters):
            lg.addFilter(RedactApiKeys())


# ----------------------------------------------------------------------------- wiring


def install(app: FastAPI, settings: Settings) -> None:
    """Add the middleware, outermost first: CORS -> access -> request limits -> routes."""
    app.add_middleware(RequestLimitsMiddleware, settings=settings)
    app.add_middleware(AccessMiddleware, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", "Prefer"],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )
