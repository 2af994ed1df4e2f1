"""Downloading result images: allowlist, redirects, size caps, and bytes that must really be an image."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from PIL import Image

from bot.download import HostPolicy, inspect_image
from bot.emulator import Duration, Emulator, EmulatorConfig, Fault
from bot.emulator_images import render_png
from bot.runcomfy import DownloadError, RunComfyClient
from tests.bot.conftest import TOKEN, ClientFactory

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


async def test_redirect_to_loopback_is_refused_unless_listed(emulator: Emulator, make_client: ClientFactory) -> None:
    port = emulator.url.rsplit(":", 1)[1]
    client = make_client(allowed_hosts=["localhost"])
    submitted = await client.submit(INPUTS)
    emulator.config.result_kind = "redirect"
    emulator.config.redirect_url = f"http://127.0.0.1:{port}/files/{submitted.request_id}.png"
    with pytest.raises(DownloadError) as caught:
        await client.download_image(f"http://localhost:{port}/files/{submitted.request_id}.png")
    assert "127.0.0.1" in str(caught.value)
    assert emulator.calls["file"] == 1


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
