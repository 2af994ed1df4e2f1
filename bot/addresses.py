"""Which network addresses the bot may fetch result files from, and a DNS resolver that enforces it.

A result URL comes from an upstream answer, so its host name is not to be
trusted either: `cdn.runcomfy.net` is on the allowlist, but whoever controls a
DNS answer for it could point it at 127.0.0.1, the cloud metadata service
(169.254.169.254) or a router on the bot's own network. The host allowlist
(`bot.download.HostPolicy`) cannot see that; only the addresses can.

`PinnedResolver` sits inside the HTTP connector, so the addresses it checks
are the addresses aiohttp connects to: one lookup, checked, then used (no
second lookup a rebinding DNS server could answer differently). A name is
refused when ANY address it resolves to is not public (loopback, private,
link-local, multicast, reserved, unspecified, shared or documentation space),
including IPv4 addresses wrapped in IPv6 (IPv4-mapped `::ffff:a.b.c.d`, 6to4
`2002::/16`, NAT64 `64:ff9b::/96`). The one exception is the operator's own
API host (the host of RUNCOMFY_BASE_URL): an emulator or proxy on the local
network is the operator's choice, not an upstream's. Literal IP addresses in a
URL never reach a resolver; the allowlist admits them only when listed exactly.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from bot.runcomfy_errors import DownloadError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ADDRESS_REFUSED = "The finished image is stored at an address the bot may not fetch from, so it was not delivered."
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefusedError(DownloadError):
    """A result host resolved to an address the bot must not connect to; final, never retried.

    `str()` (for the operator's logs) names the host, each refused address and
    its class; `user_message` (for the member) names nothing.
    """

    default_user_message = ADDRESS_REFUSED

    def __init__(self, host: str, refused: list[tuple[str, str]]) -> None:
        listed = ", ".join(f"{address} ({problem})" for address, problem in refused)
        super().__init__(f"download refused: {host} resolves to {listed}", retryable=False)
        self.host = host
        self.refused = refused


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and that a host or gateway would really reach."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(text: str) -> str | None:
    """Why the bot must not connect to `text` ("loopback", "private", ...), or None for a public address."""
    try:
        address: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        return "not an IP address"
    inner = embedded_ipv4(address)
    if inner is not None:  # the wrapped IPv4 address is where the packets go (DNS64 answers look like this)
        problem = address_problem(str(inner))
        return None if problem is None else f"{problem}, inside {address}"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not publicly routable", not address.is_global),
    )
    return next((name for name, applies in checks if applies), None)


def _host_key(host: str) -> str:
    return host.lower().rstrip(".").strip("[]")


class PinnedResolver(AbstractResolver):
    """Resolves with `resolver` (aiohttp's default: the system's), then refuses any non-public answer.

    Give it to the connector (`bot.download.download_connector`): aiohttp then
    connects to exactly the addresses returned here, so the check and the
    connection cannot disagree. `trusted_hosts` (the operator's API host) skip
    the address check.
    """

    def __init__(self, trusted_hosts: Iterable[str] = (), *, resolver: AbstractResolver | None = None) -> None:
        self.trusted = frozenset(_host_key(host) for host in trusted_hosts if host)
        self._inner = resolver if resolver is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if _host_key(host) in self.trusted:
            return answers
        refused = [(answer["host"], problem) for answer in answers if (problem := address_problem(answer["host"]))]
        if refused:
            raise AddressRefusedError(host, refused)
        return answers

    async def close(self) -> None:
        await self._inner.close()
