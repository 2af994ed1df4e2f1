"""The gateway websocket: HELLO, IDENTIFY checks, READY + GUILD_CREATE, heartbeats, RESUME with replay.

Frames go out as plain JSON text; discord.py asks for `compress=zlib-stream` but
accepts text frames (its `received_message` only inflates bytes).

Sessions are sharded as on Discord: each remembers the `[shard_id, num_shards]` it
identified with, and `Gateway.dispatch` (the one way an event leaves the fake) sends
an event only to the sessions whose shard owns its guild, or to shard 0 without one.
The rules: docs/discord-platform.md, GW.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .payloads import guild_payload, user_payload

if TYPE_CHECKING:
    from .fake import FakeDiscord
    from .state import FakeGuild

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE, RESUME = 0, 1, 2, 3, 4, 6
REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 8, 9, 10, 11


class Intent(enum.IntFlag):
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    MESSAGE_CONTENT = 1 << 15


# Bits 0-16, 20, 21, 24, 25: every intent Discord defines (dpy `Intents.all()`).
ALL_INTENTS = (1 << 17) - 1 | 1 << 20 | 1 << 21 | 1 << 24 | 1 << 25
PRIVILEGED_INTENTS = int(Intent.GUILD_MEMBERS | Intent.GUILD_PRESENCES | Intent.MESSAGE_CONTENT)
HEARTBEAT_INTERVAL_MS = 41250
REPLAY_BUFFER = 5000

Payload = dict[str, Any] | Callable[["GatewaySession"], dict[str, Any] | None]
Shard = tuple[int, int]  # (shard_id, num_shards), as IDENTIFY's `shard` array
UNSHARDED: Shard = (0, 1)


def shard_of(guild_id: int, num_shards: int) -> int:
    """The shard that receives `guild_id`'s events: Discord docs, Gateway -> Sharding, "Sharding Formula"."""
    return (guild_id >> 22) % num_shards


def parse_shard(value: object) -> Shard | None:
    """IDENTIFY's `shard`, or None when Discord would close with 4010 (Invalid shard).

    Absent means one unsharded session. Discord docs, Gateway -> Sharding: the first item is the
    zero-based shard, the second the total, so 0 <= shard_id < num_shards and num_shards >= 1.
    """
    if value is None:
        return UNSHARDED
    if not (isinstance(value, list) and len(value) == 2 and all(type(item) is int for item in value)):
        return None
    shard_id, num_shards = value
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        return None
    return shard_id, num_shards


@dataclass(eq=False)
class GatewaySession:
    id: str
    intents: int
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    buffer: deque[tuple[int, str, str]] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    shard: Shard = UNSHARDED  # from IDENTIFY; a RESUME keeps it, as the session is the same

    def wants(self, intent: int | None) -> bool:
        return intent is None or bool(self.intents & intent)

    def receives(self, guild_id: int | None) -> bool:
        """Whether Discord routes an event about `guild_id` (None: no guild, as a DM) to this session.

        Discord docs, Gateway -> Sharding: events go to the shard given by the sharding formula,
        each session applying it with its own num_shards (sessions may differ in it); events
        without a guild_id go only to shard 0.
        """
        shard_id, num_shards = self.shard
        if guild_id is None:
            return shard_id == 0
        return shard_of(guild_id, num_shards) == shard_id


class Gateway:
    def __init__(self, fake: FakeDiscord) -> None:
        self._fake = fake
        self.sessions: dict[str, GatewaySession] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.identify_count = 0
        self.identify_limit = 1000
        self.resume_count = 0
        self.replayed: list[tuple[int, str]] = []  # (seq, event) sent again on RESUME
        self.dispatched: list[tuple[int, str]] = []  # (seq, event) as first sent
        self.close_codes: list[int] = []  # codes the fake closed connections with
        self._open = asyncio.Event()
        self._open.set()
        self._closing = False

    @property
    def connected(self) -> bool:
        return any(self.attached(s) for s in self.sessions.values())

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        self.sockets.add(ws)
        session: GatewaySession | None = None
        try:
            await self._open.wait()  # an outage holds HELLO back
            if self._closing:
                await ws.close(code=1001)
                return ws
            await self._send(
                ws, {"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}, "s": None, "t": None}
            )
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                session = await self._on_frame(ws, json.loads(msg.data), session)
        except ConnectionResetError:
            pass
        finally:
            self.sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
            self._fake.notify()
        return ws

    async def _send(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        if not ws.closed:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.send_str(json.dumps(frame))

    async def _close(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        self.close_codes.append(code)
        await ws.close(code=code, message=reason.encode())

    async def _on_frame(
        self, ws: web.WebSocketResponse, frame: dict[str, Any], session: GatewaySession | None
    ) -> GatewaySession | None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            await self._send(ws, {"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            if session is not None:
                await self._close(ws, 4005, "Already authenticated.")
                return None
            return await self._identify(ws, data or {})
        elif op == RESUME:
            return await self._resume(ws, data or {})
        elif session is None:
            await self._close(ws, 4003, "Not authenticated.")
        elif op == REQUEST_MEMBERS:
            await self._members_chunk(session, data or {})
        elif op not in (PRESENCE, VOICE_STATE):
            await self._close(ws, 4001, "Unknown opcode.")
        return session

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> GatewaySession | None:
        self.identify_count += 1
        if data.get("token") != self._fake.bot_token or self.identify_count > self.identify_limit:
            await self._close(ws, 4004, "Authentication failed.")
            return None
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~ALL_INTENTS:
            await self._close(ws, 4013, "Invalid intent(s).")
            return None
        if intents & PRIVILEGED_INTENTS & ~self._fake.privileged_intents:
            await self._close(ws, 4014, "Disallowed intent(s).")
            return None
        shard = parse_shard(data.get("shard"))
        if shard is None:
            await self._close(ws, 4010, "Invalid shard.")
            return None
        if shard[1] < self._fake.min_shards:
            # Opcodes and Status Codes, 4011: the session would have handled too many guilds.
            await self._close(ws, 4011, "Sharding required.")
            return None
        # A fresh IDENTIFY of a shard replaces that shard's sessions nobody is attached to any more
        # (a restarted process); other shards' sessions stay resumable, as each process resumes its own.
        self.sessions = {k: s for k, s in self.sessions.items() if s.shard != shard or self.attached(s)}
        session = GatewaySession(secrets.token_hex(16), intents, ws, shard=shard)
        self.sessions[session.id] = session
        fake = self._fake
        guilds = self.guilds_on(session)
        ready = {
            "v": 10,
            "user": user_payload(fake.bot_user) | {"verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": fake.gateway_url,
            "application": {"id": str(fake.application_id), "flags": fake.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "_trace": ["fakediscord"],
        }
        if "shard" in data:
            ready["shard"] = list(shard)  # Gateway Events, Ready: present if sent when identifying
        await self._dispatch_to(session, "READY", ready)
        if session.wants(Intent.GUILDS):
            for guild in guilds:
                await self._dispatch_to(session, "GUILD_CREATE", self.guild_create(guild, session))
        fake.notify()
        return session

    @staticmethod
    def attached(session: GatewaySession) -> bool:
        return session.ws is not None and not session.ws.closed

    def guilds_on(self, session: GatewaySession) -> list[FakeGuild]:
        """The guilds READY lists for `session`: only its shard's (Discord docs, Gateway -> Sharding)."""
        return [g for g in self._fake.guilds.values() if session.receives(g.id)]

    def guild_create(self, guild: FakeGuild, session: GatewaySession) -> dict[str, Any]:
        members = list(guild.members.values()) if session.wants(Intent.GUILD_MEMBERS) else [guild.bot_member]
        return guild_payload(guild, members)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> GatewaySession | None:
        if data.get("token") != self._fake.bot_token:
            await self._close(ws, 4004, "Authentication failed.")
            return None
        session = self.sessions.get(str(data.get("session_id")))
        if session is None:
            await self._send(ws, {"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        last_seen = int(data.get("seq") or 0)
        async with session.lock:
            session.ws = ws
            for seq, event, frame in list(session.buffer):
                if seq > last_seen:
                    self.replayed.append((seq, event))
                    with contextlib.suppress(ConnectionResetError, RuntimeError):
                        await ws.send_str(frame)
        self.resume_count += 1
        await self._dispatch_to(session, "RESUMED", {"_trace": ["fakediscord"]})
        self._fake.notify()
        return session

    async def _members_chunk(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self._fake.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        payload = self.guild_create(guild, session)
        chunk = {"guild_id": str(guild.id), "members": payload["members"], "chunk_index": 0, "chunk_count": 1}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self._dispatch_to(session, "GUILD_MEMBERS_CHUNK", chunk)

    async def _dispatch_to(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        """Number, buffer (for RESUME) and send one dispatch; buffered only while nobody is attached."""
        async with session.lock:
            session.seq += 1
            frame = json.dumps({"op": DISPATCH, "t": event, "s": session.seq, "d": data})
            session.buffer.append((session.seq, event, frame))
            self.dispatched.append((session.seq, event))
            ws = session.ws
            if ws is not None and not ws.closed:
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await ws.send_str(frame)

    async def dispatch(self, event: str, data: Payload, *, guild: FakeGuild | None, intent: int | None = None) -> None:
        """Send `event` to every session Discord routes it to; `data` may be per session.

        `guild` is the guild the event concerns (None for a DM): only sessions on its shard get it,
        and only those whose intents include `intent`. `guild` has no default so that no event
        can skip routing by accident.
        """
        guild_id = None if guild is None else guild.id
        for session in list(self.sessions.values()):
            if not (session.wants(intent) and session.receives(guild_id)):
                continue
            payload = data(session) if callable(data) else data
            if payload is not None:
                await self._dispatch_to(session, event, payload)

    async def drop(self, code: int = 4000) -> None:
        """Close every connection the way a gateway restart does; sessions stay resumable."""
        for session in self.sessions.values():
            ws, session.ws = session.ws, None
            if ws is not None and not ws.closed:
                await self._close(ws, code, "Connection dropped by the fake.")

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """Drop the connection and hold new ones before HELLO; events dispatched meanwhile wait for RESUME."""
        self._open.clear()
        try:
            await self.drop()
            yield
        finally:
            self._open.set()

    async def close(self) -> None:
        self._closing = True
        self._open.set()
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.close(code=1001, message=b"Fake Discord shutting down.")
