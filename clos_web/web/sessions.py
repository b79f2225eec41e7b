"""Sessions, created only when a handler asks for one (a parameter annotated ``Session``).

Two stores, chosen per app (``app.sessions = ...``):

- :class:`MemorySessions` (the default): the cookie carries a random 256-bit token from
  ``secrets``; the data stays on the server, in a dict with an idle expiry and a size cap. At
  the cap, once idle sessions are expired, a new session is refused with 503 and
  ``Retry-After`` (when the oldest session expires): no one's session is evicted to make room,
  so a flood of anonymous requests cannot log real users out.
- :class:`SignedCookieSessions`: the data travels in the cookie as JSON, signed with
  HMAC-SHA256; nothing is kept on the server. Values must be JSON-able; the cookie is capped at
  4000 bytes.

A handler parameter ``session: Session`` loads the session named by the request's cookie, or
creates one; a new session is stored (and the response sets its cookie) only when the handler's
answer is a success: a request refused with a 4xx (a bad parameter, a 401/403/404) leaves no
session behind. ``session: Session | None`` only loads.

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
import math
import secrets
import threading
import time
from collections import OrderedDict
from typing import Callable

import attrs

from .cookies import cookie_header, parse_cookies
from ..http import HTTPError, Request


@attrs.define(slots=True, eq=False, repr=False)
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

    def __repr__(self) -> str:
        """Short, and without the token (a repr ends up in logs): its first 4 characters.

        >>> Session("abcdefgh", {"user": "ada"}, new=True)
        <Session abcd…, 1 key, new>
        """
        n = len(self.data)
        flags = "".join(f", {f}" for f in ("new", "modified") if getattr(self, f))
        return f"<Session {self.id[:4]}\u2026, {n} key{'s' * (n != 1)}{flags}>"


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@attrs.define(slots=True, eq=False)
class MemorySessions:
    """Server-side sessions: idle expiry (seconds), a cap on their number, cookie attributes.

    ``create()`` makes a session and ``save(session)`` stores it (the handler's binding does
    both, saving only after a successful answer). At ``max_sessions`` live sessions both raise
    503 with ``Retry-After``; nothing is evicted. ``clock`` gives the time in seconds
    (``time.monotonic``; a test may pass its own).

    >>> store = MemorySessions(max_sessions=1)
    >>> cookie = store.save(store.create())
    >>> len(store), cookie.split("=")[0]
    (1, 'session')
    >>> store.create()
    Traceback (most recent call last):
    clos_web.http.errors.HTTPError: 503 too many sessions: try again later
    """

    cookie_name: str = "session"
    idle_timeout: float = 30 * 60
    max_sessions: int = 100_000
    secure: bool = False
    samesite: str = "Lax"
    path: str = "/"
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)
    _sessions: OrderedDict = attrs.field(factory=OrderedDict,
                                         repr=lambda sessions: f"<{len(sessions)} sessions>")
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self._sessions)

    def load(self, request: Request) -> Session | None:
        """The live session named by the request's cookie, or None (expired, unknown, absent)."""
        token = parse_cookies(request.headers.get("cookie")).get(self.cookie_name)
        if not token or len(token) > 100 or not _TOKEN_CHARS.issuperset(token):
            return None
        now = self.clock()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(token)
            if session is None:
                return None
            session.last_used = now
            self._sessions.move_to_end(token)
            return session

    def create(self) -> Session:
        """A new session with a fresh random token (256 bits), not stored until :meth:`save`;
        503 (``Retry-After``) when the store is full of live sessions."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            self._check_room(now)
        return Session(secrets.token_urlsafe(32), {}, now, new=True)

    def save(self, session: Session) -> str | None:
        """Store a new session and return its ``Set-Cookie`` value (503 if the store filled up
        meanwhile); None for a session already stored (its cookie is set)."""
        if not session.new:
            return None
        now = self.clock()
        with self._lock:
            self._expire(now)
            if session.id not in self._sessions:
                self._check_room(now)
                session.last_used = now
                self._sessions[session.id] = session
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

    def _check_room(self, now: float) -> None:
        # (called with the lock held, after _expire)
        if len(self._sessions) >= self.max_sessions:
            oldest = next(iter(self._sessions.values()))
            wait = max(1, math.ceil(oldest.last_used + self.idle_timeout - now))
            raise HTTPError(503, "too many sessions: try again later",
                            headers=[("Retry-After", str(wait))])


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
        """The data in a cookie value if its signature is good and it has not expired; None
        for anything else (a cookie value is client input: never an error).

        >>> SignedCookieSessions(secret=b"k" * 32).decode("caf\xe9.sig") is None
        True
        """
        if len(value) > 4096 or not value.isascii():
            return None
        payload, _, sig = value.rpartition(".")
        if not payload:
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
