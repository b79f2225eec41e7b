"""Cookies: parse the ``Cookie`` header, build ``Set-Cookie`` values with every attribute.

>>> parse_cookies("a=1; b=two")
{'a': '1', 'b': 'two'}
>>> cookie_header("sid", "abc", max_age=60, secure=True)
'sid=abc; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Lax'
"""

from __future__ import annotations

import re
from email.utils import formatdate

from ..http import Request

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# cookie-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E  (RFC 6265 4.1.1)
_COOKIE_VALUE = re.compile(r'[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*|"[\x21\x23-\x2b\x2d-\x3a'
                           r'\x3c-\x5b\x5d-\x7e]*"')
_ATTR_VALUE = re.compile(r"[\x20-\x3a\x3c-\x7e]*")  # no CTLs, no ';'
_SAMESITE = ("Strict", "Lax", "None")
_MAX_COOKIES = 200


def parse_cookies(header: str | None) -> dict:
    """``{name: value}`` from a ``Cookie`` header (first occurrence of a name wins; at most
    200 pairs read; malformed pairs skipped; surrounding double quotes removed).

    >>> parse_cookies('x="q"; bad; y=2; x=3')
    {'x': 'q', 'y': '2'}
    """
    out = {}
    if not header:
        return out
    # at most _MAX_COOKIES + 1 pieces: the last one is the unread rest of the header
    for item in header.split(";", _MAX_COOKIES)[:_MAX_COOKIES]:
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' == value[-1]:
            value = value[1:-1]
        out.setdefault(name, value)
    return out


def cookies(request: Request) -> dict:
    """The cookies a request carries: ``cookies(request).get("theme")``."""
    return parse_cookies(request.headers.get("cookie"))


def cookie_header(name: str, value: str, *, max_age: int | None = None,
                  expires: float | None = None, path: str | None = "/",
                  domain: str | None = None, secure: bool = False, httponly: bool = True,
                  samesite: str | None = "Lax") -> str:
    """A ``Set-Cookie`` value. Name and value are checked (RFC 6265): a bad one raises
    ``ValueError``, never a split header. ``expires`` is a Unix time. ``SameSite=None`` requires
    ``secure=True``.

    >>> cookie_header("theme", "dark", path=None, httponly=False, samesite=None)
    'theme=dark'
    """
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"bad cookie name {name!r}")
    if not _COOKIE_VALUE.fullmatch(value):
        raise ValueError(f"bad cookie value for {name}: {value!r}")
    parts = [f"{name}={value}"]
    if path is not None:
        _check_attr("Path", path)
        parts.append(f"Path={path}")
    if domain is not None:
        _check_attr("Domain", domain)
        parts.append(f"Domain={domain}")
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    if expires is not None:
        parts.append("Expires=" + formatdate(expires, usegmt=True))
    if secure:
        parts.append("Secure")
    if httponly:
        parts.append("HttpOnly")
    if samesite is not None:
        if samesite not in _SAMESITE:
            raise ValueError(f"SameSite is one of {_SAMESITE}, not {samesite!r}")
        if samesite == "None" and not secure:
            raise ValueError("SameSite=None needs secure=True")
        parts.append(f"SameSite={samesite}")
    return "; ".join(parts)


def _check_attr(name: str, value: str) -> None:
    if not _ATTR_VALUE.fullmatch(value):
        raise ValueError(f"bad cookie {name} {value!r}")


def set_cookie(result, name: str, value: str, **attributes):
    """``result`` (any handler result) with a ``Set-Cookie`` header added; each call adds its
    own header line. Attributes as for :func:`cookie_header`.

    >>> from clos_web import Response
    >>> r = set_cookie(set_cookie(Response("ok"), "a", "1"), "b", "2", max_age=10)
    >>> [v for n, v in r.headers]
    ['a=1; Path=/; HttpOnly; SameSite=Lax', 'b=2; Path=/; Max-Age=10; HttpOnly; SameSite=Lax']
    """
    from .responses import with_headers

    return with_headers(result, [("Set-Cookie", cookie_header(name, value, **attributes))])


def delete_cookie(result, name: str, path: str | None = "/", domain: str | None = None):
    """``result`` with a ``Set-Cookie`` that expires cookie ``name`` at once."""
    return set_cookie(result, name, "", max_age=0, expires=0, path=path, domain=domain)


__all__ = ["parse_cookies", "cookies", "cookie_header", "set_cookie", "delete_cookie"]
