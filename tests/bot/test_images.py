import io
import os

from PIL import Image

from bot.images import fit_under


def png_bytes(width: int, height: int, noisy: bool = False) -> bytes:
    image = (
        Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        if noisy
        else Image.new("RGB", (width, height), (200, 30, 30))
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_small_png_is_sent_as_it_is() -> None:
    data = png_bytes(64, 36)
    fitted = fit_under(data, "PNG", 10 * 1024 * 1024)
    assert fitted.data == data
    assert (fitted.extension, fitted.width, fitted.height, fitted.reencoded) == ("png", 64, 36, False)


def test_oversized_png_is_reencoded_under_the_limit_keeping_proportions() -> None:
    data = png_bytes(1600, 900, noisy=True)  # noise does not compress: about 4 MB
    limit = 1024 * 1024
    assert len(data) > limit
    fitted = fit_under(data, "PNG", limit)
    assert len(fitted.data) <= limit
    assert fitted.reencoded
    assert abs(fitted.width / fitted.height - 16 / 9) < 0.01
    with Image.open(io.BytesIO(fitted.data)) as image:
        assert image.format in ("WEBP", "JPEG")


def test_tiny_limit_downscales_until_it_fits() -> None:
    data = png_bytes(1200, 1200, noisy=True)
    fitted = fit_under(data, "PNG", 200 * 1024)
    assert len(fitted.data) <= 200 * 1024
    assert fitted.width < 1200


def test_format_discord_cannot_embed_is_converted() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "BMP")
    fitted = fit_under(buffer.getvalue(), "BMP", 10 * 1024 * 1024)
    assert fitted.extension in ("webp", "jpg")
