"""Downloading result images: allowlist, redirects, size caps, and bytes that must really be an image."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any, ParamSpec, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from PIL import Image
from pydantic import SecretStr

from bot.addresses import ADDRESS_REFUSED, AddressRefusedError, address_problem
from bot.download import HostPolicy, inspect_image, open_session
from bot.emulator import Duration, Emulator, EmulatorConfig, Fault
from bot.emulator_images import render_png
from bot.images import ImageWorkers
from bot.runcomfy import DownloadError, RunComfyClient
from bot.settings import Settings
from tests.bot.conftest import TOKEN, ClientFactory

P = ParamSpec("P")
T = TypeVar("T")
INPUTS = {"prompt": "a lighthouse at dusk", "aspect_ratio": "3:2", "seed": 11}


async def finished_file_url(emulator: Emulator, client: RunComfyClient) -> str:
    submitted = await client.submit(INPUTS)
    result = await client.result(submitted.request_id)
    return result.image_urls[0]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size without the pixels: what a decompression bomb looks like to a parser."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


class FileHost:
    """A bare file server: serves given bytes under given paths and remembers request headers."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.headers: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        body, content_type = self.files[request.match_info["name"]]
        return web.Response(body=body, content_type=content_type)


@pytest.fixture
async def file_host() -> AsyncIterator[FileHost]:
    host = FileHost()
    app = web.Application()
    app.router.add_get("/{name}", host.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield host
    await runner.cleanup()


async def test_download_verifies_and_describes_the_image(emulator: Emulator, client: RunComfyClient) -> None:
    image = await client.download_image(await finished_file_url(emulator, client))
    assert (image.format, image.content_type, image.extension) == ("PNG", "image/png", "png")
    assert (image.width, image.height) == (256, 171)
    assert image.data == render_png(INPUTS["prompt"], INPUTS["seed"], INPUTS["aspect_ratio"])


async def test_type_comes_from_the_bytes_not_the_url_or_header(file_host: FileHost, client: RunComfyClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "teal").save(buffer, format="JPEG")
    file_host.files["fake.png"] = (buffer.getvalue(), "image/png")
    image = await client.download_image(f"{file_host.url}/fake.png")
    assert (image.format, image.content_type, image.extension, image.width) == ("JPEG", "image/jpeg", "jpg", 40)


async def test_no_authorization_header_reaches_the_file_host(file_host: FileHost, client: RunComfyClient) -> None:
    file_host.files["a.png"] = (render_png("x", 1, "1:1"), "image/png")
    await client.download_image(f"{file_host.url}/a.png")
    assert file_host.headers
    assert all("Authorization" not in headers for headers in file_host.headers)
    assert all(TOKEN not in str(headers) for headers in file_host.headers)


async def test_host_not_in_allowlist_is_refused_before_any_request(
    emulator: Emulator, make_client: ClientFactory
) -> None:
    url = await finished_file_url(emulator, make_client())
    client = make_client(allowed_hosts=["*.runcomfy.net"])
    with pytest.raises(DownloadError) as caught:
        await client.download_image(url)
    assert "allowlist" in str(caught.value)
    assert not caught.value.retryable
    assert client.request_count == 0
    assert emulator.calls["file"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x.png",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1/x.png",
        "http:///x.png",
        "http://127.0.0.1:99999/x.png",
        "http://10.0.0.5/x.png",
        "http://[::1]/x.png",
    ],
)
async def test_bad_urls_are_refused(client: RunComfyClient, url: str) -> None:
    with pytest.raises(DownloadError):
        await client.download_image(url)
    assert client.request_count == 0


def test_host_policy_patterns() -> None:
    policy = HostPolicy(["*.runcomfy.net", "127.0.0.1", "cdn.example.com"])
    assert policy.allows("images.runcomfy.net")
    assert policy.allows("a.b.RunComfy.net.")
    assert not policy.allows("runcomfy.net")
    assert not policy.allows("evilruncomfy.net")
    assert not policy.allows("images.runcomfy.net.evil.com")
    assert policy.allows("cdn.example.com")
    assert not policy.allows("x.cdn.example.com")
    assert policy.allows("127.0.0.1")
    assert not policy.allows("127.0.0.2")
    assert not policy.allows("192.168.1.1")
    assert not HostPolicy(["*.0.0.1"]).allows("127.0.0.1")  # IP literals only by exact listing


async def test_redirect_to_a_host_not_in_allowlist_is_refused(emulator: Emulator, client: RunComfyClient) -> None:
    url = await finished_file_url(emulator, client)
    emulator.config.result_kind = "redirect"
    emulator.config.redirect_url = "https://evil.example.com/steal.png"
    with pytest.raises(DownloadError) as caught:
        await client.download_image(url)
    assert "evil.example.com" in str(caught.value)
    assert client.request_count == 3  # submit, result, the redirecting file; never the target


async def test_a_listed_name_that_resolves_to_loopback_is_refused_without_a_pinned_session(
    emulator: Emulator, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Listing a name is not enough: its addresses are checked too, even on a session built without the
    pinned connector (by a lookup of its own, with a warning that the wiring is missing)."""
    port = emulator.url.rsplit(":", 1)[1]
    client = make_client(allowed_hosts=["localhost"])
    submitted = await client.submit(INPUTS)
    with pytest.raises(AddressRefusedError) as caught:
        await client.download_image(f"http://localhost:{port}/files/{submitted.request_id}.png")
    assert "localhost resolves to" in str(caught.value)
    assert "(loopback)" in str(caught.value)
    assert caught.value.user_message == ADDRESS_REFUSED
    assert emulator.calls["file"] == 0
    assert any("not built with bot.download.open_session" in record.message for record in caplog.records)


async def test_redirects_inside_the_allowlist_are_followed(
    emulator: Emulator, client: RunComfyClient, make_client: ClientFactory
) -> None:
    target = await finished_file_url(emulator, client)
    config = EmulatorConfig(queue_time=Duration.constant(0), run_time=Duration.constant(0))
    async with Emulator(config, token=TOKEN) as bouncer:
        bouncing = make_client(base_url=bouncer.url)
        url = await finished_file_url(bouncer, bouncing)
        bouncer.config.result_kind = "redirect"
        bouncer.config.redirect_url = target
        image = await bouncing.download_image(url)
    assert image.format == "PNG"
    assert (bouncer.calls["file"], emulator.calls["file"]) == (1, 1)


async def test_redirect_loops_stop_after_five(emulator: Emulator, client: RunComfyClient) -> None:
    url = await finished_file_url(emulator, client)
    emulator.config.result_kind = "redirect"
    emulator.config.redirect_url = url
    with pytest.raises(DownloadError) as caught:
        await client.download_image(url)
    assert "redirects" in str(caught.value)
    assert emulator.calls["file"] == 6


@pytest.mark.parametrize("with_length", [True, False])
async def test_too_large_is_refused(emulator: Emulator, make_client: ClientFactory, with_length: bool) -> None:
    client = make_client(max_download_bytes=200_000)
    url = await finished_file_url(emulator, client)
    emulator.config.result_kind = "huge"
    emulator.config.huge_bytes = 5_000_000
    emulator.config.huge_content_length = with_length
    with pytest.raises(DownloadError) as caught:
        await client.download_image(url)
    assert ("Content-Length" in str(caught.value)) is with_length
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("kind", "words"), [("html", "not a valid image"), ("empty", "empty"), ("truncated", "not a valid image")]
)
async def test_bodies_that_are_not_images_are_refused(
    emulator: Emulator, client: RunComfyClient, kind: str, words: str
) -> None:
    url = await finished_file_url(emulator, client)
    emulator.config.result_kind = kind  # type: ignore[assignment]  # Literal from a parametrized str
    with pytest.raises(DownloadError) as caught:
        await client.download_image(url)
    assert words in str(caught.value)
    assert caught.value.user_message == "The finished image could not be downloaded."


async def test_decompression_bomb_is_refused(file_host: FileHost, client: RunComfyClient) -> None:
    file_host.files["bomb.png"] = (png_header_only(30_000, 30_000), "image/png")
    with pytest.raises(DownloadError) as caught:
        await client.download_image(f"{file_host.url}/bomb.png")
    assert "bomb" in str(caught.value) or "pixel budget" in str(caught.value)


def test_pixel_budget_is_checked_before_decoding() -> None:
    with pytest.raises(DownloadError, match="pixel budget"):
        inspect_image(png_header_only(5000, 5000), max_pixels=1_000_000)
    with pytest.raises(DownloadError, match="pixel budget"):
        inspect_image(render_png("x", 1, "1:1"), max_pixels=10_000)


def test_formats_discord_cannot_show_are_refused() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="BMP")
    with pytest.raises(DownloadError, match="unsupported image format BMP"):
        inspect_image(buffer.getvalue())


async def test_transient_file_errors_are_retried(emulator: Emulator, client: RunComfyClient) -> None:
    url = await finished_file_url(emulator, client)
    emulator.inject("file", Fault.http(503), times=2)
    assert (await client.download_image(url)).format == "PNG"
    assert emulator.calls["file"] == 3


async def test_missing_file_is_final(emulator: Emulator, client: RunComfyClient) -> None:
    with pytest.raises(DownloadError) as caught:
        await client.download_image(f"{emulator.url}/files/nope.png")
    assert (caught.value.status, caught.value.retryable) == (404, False)
    assert emulator.calls["file"] == 1


async def test_download_timeout(emulator: Emulator, make_client: ClientFactory) -> None:
    client = make_client(download_timeout=0.2, max_retries=1)
    url = await finished_file_url(emulator, client)
    emulator.inject("file", Fault.slow(0.5), times=2)
    with pytest.raises(DownloadError) as caught:
        await client.download_image(url)
    assert "timed out" in str(caught.value)
    assert caught.value.retryable
    assert emulator.calls["file"] == 2


# -- addresses: a host name is only as safe as what it resolves to -------------------------------------


class MapDNS(AbstractResolver):
    """DNS for tests: names map to answer lists; later lookups may get other answers (a rebinding server)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        self.queries.append(host)
        rounds = self.answers[host]
        addresses = rounds[min(self.queries.count(host), len(rounds)) - 1]
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass


def pinned_client(session: aiohttp.ClientSession, base_url: str, allowed: list[str]) -> RunComfyClient:
    return RunComfyClient(
        session,
        base_url=base_url,
        model="imagineart/imagineart-1.5-preview/text-to-image",
        token=SecretStr(TOKEN),
        allowed_hosts=allowed,
        max_retries=1,
        backoff_base=0.001,
        backoff_cap=0.01,
        download_timeout=2.0,
    )


@pytest.mark.parametrize(
    ("answers", "refused"),
    [
        (["127.0.0.1"], "127.0.0.1 (loopback)"),
        (["93.184.216.34", "127.0.0.1"], "127.0.0.1 (loopback)"),  # one bad answer among good ones is enough
        (["169.254.169.254"], "169.254.169.254 (link-local)"),  # the cloud metadata service
        (["10.1.2.3"], "10.1.2.3 (private)"),
        (["::ffff:127.0.0.1"], "::ffff:127.0.0.1 (loopback, inside ::ffff:7f00:1)"),
    ],
)
async def test_an_allowlisted_name_resolving_to_a_local_address_is_refused_before_any_request(
    emulator: Emulator,
    file_host: FileHost,
    caplog: pytest.LogCaptureFixture,
    answers: list[str],
    refused: str,
) -> None:
    file_host.files["a.png"] = (render_png("x", 1, "1:1"), "image/png")
    dns = MapDNS({"cdn.runcomfy.net": [answers]})
    settings = Settings(_env_file=None, runcomfy_base_url=emulator.url)
    port = file_host.url.rsplit(":", 1)[1]
    async with open_session(settings, resolver=dns) as session:
        client = pinned_client(session, emulator.url, settings.allowed_download_hosts)
        with pytest.raises(AddressRefusedError) as caught:
            await client.download_image(f"http://cdn.runcomfy.net:{port}/a.png")
    assert caught.value.user_message == ADDRESS_REFUSED
    assert not caught.value.retryable
    assert dns.queries == ["cdn.runcomfy.net"]
    assert file_host.headers == []  # nothing was fetched
    [logged] = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert f"download refused: cdn.runcomfy.net resolves to {refused}" in logged


async def test_a_redirect_to_a_name_resolving_to_loopback_is_refused(emulator: Emulator, file_host: FileHost) -> None:
    file_host.files["a.png"] = (render_png("x", 1, "1:1"), "image/png")
    port = file_host.url.rsplit(":", 1)[1]
    dns = MapDNS({"images.runcomfy.net": [["127.0.0.1"]]})
    settings = Settings(_env_file=None, runcomfy_base_url=emulator.url)
    async with open_session(settings, resolver=dns) as session:
        client = pinned_client(session, emulator.url, settings.allowed_download_hosts)
        url = (await client.result((await client.submit(INPUTS)).request_id)).image_urls[0]
        emulator.config.result_kind = "redirect"
        emulator.config.redirect_url = f"http://images.runcomfy.net:{port}/a.png"
        with pytest.raises(AddressRefusedError):
            await client.download_image(url)
    assert emulator.calls["file"] == 1  # the first hop, on the operator's own (literal) API host
    assert file_host.headers == []


async def test_the_connection_goes_to_the_address_that_was_resolved_once(emulator: Emulator) -> None:
    """The operator's API host may be local (here a name for the emulator). A rebinding DNS server answers the
    first lookup with the emulator's address and every later one with 127.0.0.2, where nothing listens: the
    whole job works, so each connection used the one answer the resolver returned, and no lookup was repeated."""
    port = emulator.url.rsplit(":", 1)[1]
    base_url = f"http://emulator.test:{port}"
    dns = MapDNS({"emulator.test": [["127.0.0.1"], ["127.0.0.2"]]})
    emulator.config.file_base_url = base_url
    settings = Settings(_env_file=None, runcomfy_base_url=base_url)
    async with open_session(settings, resolver=dns) as session:
        client = pinned_client(session, base_url, settings.allowed_download_hosts)
        result = await client.result((await client.submit(INPUTS)).request_id)
        image = await client.download_image(result.image_urls[0])
    assert image.format == "PNG"
    assert dns.queries == ["emulator.test"]
    assert emulator.calls["file"] == 1


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to classify, not to bind
        ("::", "unspecified"),
        ("100.64.0.1", "not publicly routable"),
        ("::ffff:10.0.0.1", "private, inside ::ffff:a00:1"),
        ("2002:7f00:1::1", "loopback, inside 2002:7f00:1::1"),
        ("64:ff9b::a9fe:a9fe", "link-local, inside 64:ff9b::a9fe:a9fe"),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
        ("64:ff9b::808:808", None),
    ],
)
def test_address_classes(address: str, problem: str | None) -> None:
    assert address_problem(address) == problem


async def test_the_decode_check_waits_for_a_free_image_worker(emulator: Emulator, make_client: ClientFactory) -> None:
    """Downloads share the process's image threads, so a burst of results cannot decode more at once."""

    class Watched(ImageWorkers):
        def __init__(self) -> None:
            super().__init__(1)
            self.asked = asyncio.Event()

        async def run(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
            self.asked.set()
            return await super().run(func, *args, **kwargs)

    workers = Watched()
    held = threading.Event()
    try:
        client = make_client(image_workers=workers)
        url = await finished_file_url(emulator, client)
        hold = asyncio.create_task(workers.run(held.wait, 30))
        await asyncio.sleep(0)
        assert workers.running == 1
        workers.asked.clear()
        download = asyncio.create_task(client.download_image(url))
        await workers.asked.wait()
        await asyncio.sleep(0)
        assert (workers.running, workers.waiting) == (1, 1)
        assert emulator.calls["file"] == 1
        assert not download.done()
        held.set()
        assert (await download).format == "PNG"
        assert await hold
    finally:
        held.set()
        workers.close()
