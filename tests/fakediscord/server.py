"""The aiohttp app: routing, bot-token auth, fault injection, rate limits, error bodies, request log.

Every REST answer passes through `RestServer.serve`, so each route gets the same
treatment: 401 without the bot token (token routes need none), injected faults,
buckets and the global limit, `DiscordError` -> JSON body with the exact content type
`application/json` (discord.py parses nothing else), and one `RecordedRequest`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .compose import RAW_BODY
from .errors import DiscordError, not_found, unauthorized
from .faults import Fault
from .ratelimit import RouteInfo, retry_headers

if TYPE_CHECKING:
    from .fake import FakeDiscord

API_PREFIX = "/api/v10"
CDN_ROUTE = "/attachments/{channel_id}/{attachment_id}/{filename}"  # attachment downloads, outside the API
Reply = dict[str, Any] | list[Any] | web.Response | None
Handler = Callable[["Call"], Awaitable[Reply]]


@dataclass
class Call:
    """One request as a handler sees it."""

    fake: FakeDiscord
    request: web.Request
    info: RouteInfo

    def param(self, name: str) -> str:
        return self.info.params[name]

    def id_param(self, name: str, missing: Callable[[], DiscordError] = not_found) -> int:
        value = self.info.params.get(name, "")
        if not value.isdigit():
            raise missing()
        return int(value)

    @property
    def query(self) -> dict[str, str]:
        return dict(self.request.query)


@dataclass
class RouteSpec:
    method: str
    template: str
    handler: Handler
    auth: str = "bot"  # "bot": needs `Authorization: Bot <token>`; "token": interaction token in the path; "none"


@dataclass
class RecordedRequest:
    method: str
    template: str | None  # None: an unknown route
    path: str
    status: int
    at: float
    bot_auth: bool
    error_code: int | None = None
    body: bytes = b""  # what the client sent: the JSON, or a multipart's payload_json and files

    @property
    def key(self) -> str:
        return f"{self.method} {self.template or self.path}"


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={**(headers or {}), "Content-Type": "application/json"}
    )


DROP = 0  # a fault "status" that cuts the connection instead of answering


def _fault_response(fault: Fault) -> web.Response:
    if fault.status == 429:
        body = {"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": False}
        return json_response(body, 429, retry_headers(fault.retry_after, scope="user"))
    return json_response({"message": f"{fault.status}: Injected fault", "code": 0}, fault.status or 503)


class RestServer:
    def __init__(self, fake: FakeDiscord) -> None:
        self._fake = fake
        self.routes: list[RouteSpec] = []

    def add(self, method: str, template: str, handler: Handler, *, auth: str = "bot") -> None:
        self.routes.append(RouteSpec(method, template, handler, auth))

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/", self._fake.gateway.handle)
        app.router.add_get(CDN_ROUTE, self._cdn)
        for spec in self.routes:
            app.router.add_route(spec.method, API_PREFIX + spec.template, self._bind(spec))
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    def _bind(self, spec: RouteSpec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.serve(spec, request)

        return handle

    async def serve(self, spec: RouteSpec, request: web.Request) -> web.StreamResponse:
        fake = self._fake
        bot_auth = request.headers.get("Authorization") == f"Bot {fake.bot_token}"
        info = RouteInfo(
            spec.method, spec.template, request.path, dict(request.match_info), bot_auth, spec.auth == "token"
        )
        headers: dict[str, str] = {}
        error_code: int | None = None
        await self._held(info)
        outage = fake.outage
        if outage is not None and outage.applies(info):
            outage.served += 1
            fake.requests.append(
                RecordedRequest(spec.method, spec.template, request.path, 0 if outage.drop else outage.status,
                                fake.clock.now(), bot_auth)
            )  # fmt: skip
            fake.notify()
            if outage.drop and request.transport is not None:
                request.transport.abort()  # the connection is cut: the client gets no answer at all
            return json_response({"message": "503: Service Unavailable", "code": 0}, outage.status)
        try:
            if fake.ratelimits.banned():
                response = web.Response(status=429, text="error code: 1015", content_type="text/plain")
            elif spec.auth == "bot" and not bot_auth:
                raise unauthorized()
            elif fault := fake.faults.pick(info, after=False):
                response = _fault_response(fault)
                if fault.status == DROP and request.transport is not None:
                    request.transport.abort()  # the connection is cut: the client gets no answer at all
            else:
                decision = fake.ratelimits.check(info, fake.bot_token if bot_auth else None)
                headers = decision.headers
                if decision.limited:
                    response = json_response(decision.body(), 429, headers)
                else:
                    response = self._to_response(await spec.handler(Call(fake, request, info)), headers)
                    if fault := fake.faults.pick(info, after=True):
                        response = _fault_response(fault)
        except DiscordError as exc:
            error_code = exc.code
            response = json_response(exc.body(), exc.status, headers)
        except ConnectionResetError:
            # The client died half-way through sending the body (a SIGKILLed bot): nothing was applied.
            response = web.Response(status=499, text="client closed request")
        fake.ratelimits.record_status(response.status, response.headers.get("X-RateLimit-Scope"))
        body = request.get(RAW_BODY)
        if body is None:
            try:
                body = await request.read()  # cached if the handler read it; else read now
            except (OSError, RuntimeError, ValueError):
                body = b""  # a multipart stream the handler gave up on half-way
        fake.requests.append(
            RecordedRequest(
                spec.method, spec.template, request.path, response.status, fake.clock.now(), bot_auth, error_code, body
            )
        )
        fake.notify()
        return response

    @staticmethod
    def _to_response(result: Reply, headers: dict[str, str]) -> web.Response:
        if isinstance(result, web.Response):
            result.headers.update(headers)
            return result
        if result is None:
            return web.Response(status=204, headers=headers)
        return json_response(result, 200, headers)

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        fake = self._fake
        path = request.path.removeprefix(API_PREFIX)
        fake.unknown_routes.append(f"{request.method} {path}")
        bot_auth = request.headers.get("Authorization") == f"Bot {fake.bot_token}"
        fake.requests.append(RecordedRequest(request.method, None, request.path, 404, fake.clock.now(), bot_auth, 0))
        fake.notify()
        return json_response(not_found().body(), 404)

    async def _held(self, info: RouteInfo) -> None:
        """Wait while a test's `fake.hold(...)` holds requests like this one."""
        for held in [held for held in self._fake.holds if held.matches(info)]:
            held.waiting += 1
            self._fake.notify()
            await held.released.wait()

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        """An attachment's bytes, for a signed, live link; `fake.hold(f"GET {CDN_ROUTE}")` makes downloads slow."""
        await self._held(RouteInfo("GET", CDN_ROUTE, request.path, dict(request.match_info)))
        raw_id = request.match_info["attachment_id"]
        attachment = self._fake.attachments.get(int(raw_id)) if raw_id.isdigit() else None
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        if attachment.signer is not None and not self._fake.cdn.allows(request.path, request.query):
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=attachment.data, content_type=attachment.content_type or "application/octet-stream")
