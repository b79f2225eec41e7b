"""Sessions, created only when a handler asks for one (a parameter annotated ``Session``).

Two stores, chosen per app (``app.sessions = ...``):

- :class:`MemorySessions` (the default): the cookie carries a random 256-bit token from
  ``secrets``; the data stays on the server, in a dict with an idle expiry and a size cap (the
  least recently used session is dropped past the cap).
- :class:`SignedCookieSessions`: the data travels in the cookie as JSON, signed with
  HMAC-SHA256; nothing is kept on the server. Values must be JSON-able; the cookie is capped at
  4000 bytes.

A handler parameter ``session: Session`` loads the session named by the request's cookie, or
creates one (and the response then sets the cookie); ``session: Session | None`` only loads.

>>> store = MemorySessions(idle_timeout=60)
>>> s = store.create()
>>> s["user"] = "ada"
>>> len(s.id) >= 43 and store.save(s).startswith("session=")
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict

import attrs

from .cookies import cookie_header, parse_cookies
from .http import Request


@attrs.define(slots=True, eq=False)
class Session:
    """One client's session: a token ``id`` and a ``data`` dict (``session["k"] = v``).

    ``new`` is true until the cookie has been sent; ``modified`` after any write.

    >>> s = Session("t", {})
    >>> s["n"] = 1; s["n"], s.modified
    (1, True)
    """

    id: str
    data: dict = attrs.field(factory=dict)
    last_used: float = 0.0
    new: bool = False
    modified: bool = False

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value):
        self.data[key] = value
        self.modified = True

    def __delitem__(self, key):
        del self.data[key]
        self.modified = True

    def __contains__(self, key):
        return key in self.data

    def get(self, key, default=None):
        """``data.get(key, default)``."""
        return self.data.get(key, default)


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@attrs.define(slots=True, eq=False)
class MemorySessions:
    """Server-side sessions: idle expiry (seconds), a cap on their number, cookie attributes.

    >>> store = MemorySessions(max_sessions=2)
    >>> a, b, c = store.create(), store.create(), store.create()
    >>> len(store)
    2
    """

    cookie_name: str = "session"
    idle_timeout: float = 30 * 60
    max_sessions: int = 100_000
    secure: bool = False
    samesite: str = "Lax"
    path: str = "/"
    _sessions: OrderedDict = attrs.field(factory=OrderedDict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def __len__(self) -> int:
        return len(self._sessions)

    def load(self, request: Request) -> Session | None:
        """The live session named by the request's cookie, or None (expired, unknown, absent)."""
        token = parse_cookies(request.headers.get("cookie")).get(self.cookie_name)
        if not token or len(token) > 100 or not _TOKEN_CHARS.issuperset(token):
            return None
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(token)
            if session is None:
                return None
            session.last_used = now
            self._sessions.move_to_end(token)
            return session

    def create(self) -> Session:
        """A new session with a fresh random token (256 bits)."""
        now = time.monotonic()
        session = Session(secrets.token_urlsafe(32), {}, now, new=True)
        with self._lock:
            self._expire(now)
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def save(self, session: Session) -> str | None:
        """The ``Set-Cookie`` value to send after the handler, or None (cookie already set)."""
        if not session.new:
            return None
        session.new = False
        return cookie_header(self.cookie_name, session.id, path=self.path, secure=self.secure,
                             httponly=True, samesite=self.samesite)

    def delete(self, session: Session) -> None:
        """Forget ``session`` (log out)."""
        with self._lock:
            self._sessions.pop(session.id, None)

    def _expire(self, now: float) -> None:
        # ordered by last use: expired sessions are at the front
        sessions = self._sessions
        limit = now - self.idle_timeout
        while sessions:
            token, first = next(iter(sessions.items()))
            if first.last_used > limit:
                break
            del sessions[token]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@attrs.define(slots=True, eq=False)
class SignedCookieSessions:
    """Sessions kept in the cookie itself: JSON data, HMAC-SHA256 signed with ``secret``.

    Expires ``idle_timeout`` seconds after the last response that re-sent it (every response
    to a handler that asked for the session re-signs it).

    >>> store = SignedCookieSessions(secret=b"k" * 32)
    >>> s = store.create(); s["cart"] = [1, 2]
    >>> value = store.save(s).split(";")[0].split("=", 1)[1]
    >>> store.decode(value)["cart"]
    [1, 2]
    """

    secret: bytes = attrs.field(repr=False)
    cookie_name: str = "session"
    idle_timeout: float = 30 * 60
    secure: bool = False
    samesite: str = "Lax"
    path: str = "/"

    @secret.validator
    def _check_secret(self, attribute, value):
        if len(value) < 16:
            raise ValueError("the signing secret needs at least 16 bytes")

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode("ascii"), hashlib.sha256).digest())

    def decode(self, value: str) -> dict | None:
        """The data in a cookie value if its signature is good and it has not expired."""
        payload, _, sig = value.rpartition(".")
        if not payload or len(value) > 4096:
            return None
        if not hmac.compare_digest(self._sign(payload), sig):
            return None
        try:
            doc = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(doc, dict) or time.time() - doc.get("t", 0) > self.idle_timeout:
            return None
        return doc.get("d")

    def load(self, request: Request) -> Session | None:
        """The session in the request's cookie, or None."""
        value = parse_cookies(request.headers.get("cookie")).get(self.cookie_name)
        data = self.decode(value) if value else None
        if not isinstance(data, dict):
            return None
        return Session(data.pop("_id", ""), data, time.monotonic())

    def create(self) -> Session:
        """A new, empty session."""
        return Session(secrets.token_urlsafe(16), {}, time.monotonic(), new=True)

    def save(self, session: Session) -> str | None:
        """The re-signed cookie (always sent: it carries the data and the idle clock)."""
        session.new = False
        doc = {"t": int(time.time()), "d": {**session.data, "_id": session.id}}
        payload = _b64(json.dumps(doc, separators=(",", ":")).encode("utf-8"))
        value = f"{payload}.{self._sign(payload)}"
        if len(value) > 4000:
            raise ValueError("session data too large for a cookie")
        return cookie_header(self.cookie_name, value, path=self.path, secure=self.secure,
                             httponly=True, samesite=self.samesite,
                             max_age=int(self.idle_timeout))


__all__ = ["Session", "MemorySessions", "SignedCookieSessions"]
