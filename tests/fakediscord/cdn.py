"""Discord's CDN links: signed, and dead a day after they were handed out.

Since 2024 every attachment URL Discord gives (in a message, an interaction's
resolved data) carries `ex` (expiry, unix seconds in hex), `is` (issued) and
`hm` (a signature); a link past its `ex` answers 404, and every fresh payload
carries a freshly signed link. The fake does the same on its clock, so a test
can let an input image's link die with `fake.clock.advance(...)`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from .clock import FakeClock

LINK_LIFETIME = 24 * 3600.0


class Cdn:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._secret = secrets.token_bytes(16)

    def _mac(self, path: str, ex: str, issued: str) -> str:
        return hmac.new(self._secret, f"{path}|{ex}|{issued}".encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, url: str, path: str) -> str:
        """`url` with the query Discord adds: valid for LINK_LIFETIME from now."""
        now = self.clock.wall()
        ex, issued = f"{int(now + LINK_LIFETIME):x}", f"{int(now):x}"
        return f"{url}?ex={ex}&is={issued}&hm={self._mac(path, ex, issued)}"

    def allows(self, path: str, query: Mapping[str, str]) -> bool:
        """Whether a request for `path` carries a genuine, unexpired signature."""
        ex, issued, mac = query.get("ex", ""), query.get("is", ""), query.get("hm", "")
        if not hmac.compare_digest(mac, self._mac(path, ex, issued)):
            return False
        try:
            return int(ex, 16) > self.clock.wall()
        except ValueError:
            return False
