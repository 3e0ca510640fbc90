"""Secrets kept out of everything yaim shows: --check-config, logs, /health, /status, yaimctl.

Two walls. The shapes that carry a password are masked where they are shown
(`mask_url` for user:password@ in a URL, `mask_dsn` for libpq's password keys);
and `Secrets` knows every secret string of a config, so that a log line or an
answer that quotes one by some other path (an error message, a library's text)
has it replaced all the same.

libpq's keyword syntax is parsed by hand here, following its documented rules
(single quotes, backslash escapes), because a regular expression that stops at the
first space or quote lets the rest of an escaped password through; no library of
the design card parses it (psycopg's `conninfo_to_dict` needs libpq at import).
A URL's user information is found by hand too: urlsplit raises on some bad URLs,
re-encodes what it puts back together, and reads them otherwise than libpq does;
the span masked here covers what either of them takes for the password.

Pure module: no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, List, Optional, Tuple
from urllib.parse import quote, unquote

MASK = "***"
PASSWORD_KEYS = ("password", "sslpassword")
SHORTEST_SECRET = 3  # shorter strings are not replaced in free text (they would be everywhere)

Span = Tuple[int, int]  # where a value is written in a string: [start, end)

_SCHEME = re.compile(r"[\x00-\x20\s]*[A-Za-z][A-Za-z0-9+.\-]*://")


def _userinfo_password(url: str) -> Optional[Span]:
    """Where the password of a URL's user:password@ is, as written; None if it has none.

    Read by hand, and wider than any one parser: the authority runs to the first
    '/', the user information to the last '@' in it. urlsplit (what requests and
    python-etcd use) also stops at '?' and '#', libpq at the first '@': whichever
    reads the URL, the password it sends lies inside this span. Never raises, where
    urlsplit does (a broken IPv6 literal), so a bad URL can still be shown.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    start = scheme.end()
    slash = url.find("/", start)
    at = url.rfind("@", start, len(url) if slash < 0 else slash)
    colon = url.find(":", start, at) if at >= 0 else -1
    return None if colon < 0 else (colon + 1, at)


def _masked(text: str, spans: Iterable[Span]) -> str:
    """`text` with the union of `spans` replaced by ***, one *** per joined stretch."""
    joined: List[List[int]] = []
    for start, end in sorted(spans):
        if joined and start <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    for start, end in reversed(joined):
        text = text[:start] + MASK + text[end:]
    return text


def url_password(url: str) -> Optional[str]:
    """The password of a URL's user:password@, decoded; None if it has none."""
    span = _userinfo_password(url)
    return None if span is None else unquote(url[span[0] : span[1]])


def mask_url(url: str) -> str:
    """The URL with the password of its user:password@ replaced by ***, the rest as written."""
    span = _userinfo_password(url)
    return url if span is None else _masked(url, [span])


_URI = re.compile(r"\s*postgres(?:ql)?://", re.IGNORECASE)
# A query parameter of a URI, wherever a '?' or '&' starts one: libpq's query begins at
# a '?' after the user information, which may itself hold a '?' (libpq reads it to '@').
_URI_PARAM = re.compile(r"(?<=[?&])([^&=?]*)=([^&]*)")
# C isspace() in the C locale, what libpq skips; str.isspace() knows more characters.
_LIBPQ_SPACE = frozenset(" \t\n\r\f\v")


def _value(dsn: str, i: int) -> Tuple[str, int]:
    """The keyword value that starts at `i`, unquoted and unescaped as libpq reads it
    (a backslash escapes the next character, a trailing one is dropped), and its end."""
    value, n = [], len(dsn)
    quoted = i < n and dsn[i] == "'"
    i += quoted
    while i < n and (dsn[i] != "'" if quoted else dsn[i] not in _LIBPQ_SPACE):
        if dsn[i] == "\\":
            i += 1
            if i == n:
                break
        value.append(dsn[i])
        i += 1
    return "".join(value), min(i + quoted, n)


def _keyword_passwords(dsn: str) -> List[Tuple[Span, str]]:
    """libpq's `key = value` form: each password key's value, where and what it is."""
    found, i, n = [], 0, len(dsn)
    while i < n:
        while i < n and dsn[i] in _LIBPQ_SPACE:
            i += 1
        start = i
        while i < n and dsn[i] != "=" and dsn[i] not in _LIBPQ_SPACE:
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i] in _LIBPQ_SPACE:
            i += 1
        if i >= n or dsn[i] != "=" or not key:
            break  # libpq refuses the rest; nothing after it is a value
        i += 1
        while i < n and dsn[i] in _LIBPQ_SPACE:
            i += 1
        value, end = _value(dsn, i)
        if key in PASSWORD_KEYS:
            found.append(((i, end), value))
        i = end
    return found


def _uri_passwords(dsn: str) -> List[Tuple[Span, str]]:
    """libpq's URI form: the user information's password and every password parameter
    (names and values percent-decoded, '+' left as it is, as libpq does)."""
    found = []
    userinfo = _userinfo_password(dsn)
    if userinfo is not None:
        found.append((userinfo, unquote(dsn[userinfo[0] : userinfo[1]])))
    for param in _URI_PARAM.finditer(dsn):
        if unquote(param.group(1)) in PASSWORD_KEYS:
            found.append((param.span(2), unquote(param.group(2))))
    return found


def _dsn_passwords(dsn: str) -> List[Tuple[Span, str]]:
    return _uri_passwords(dsn) if _URI.match(dsn) else _keyword_passwords(dsn)


def dsn_passwords(dsn: str) -> List[str]:
    """Every password a libpq connection string carries (keyword or URI form), decoded."""
    return [value for _, value in _dsn_passwords(dsn) if value]


def mask_dsn(dsn: str) -> str:
    """A libpq connection string with every password (password, sslpassword) shown as ***,
    the rest as written."""
    return _masked(dsn, [span for span, _ in _dsn_passwords(dsn)])


def _spellings(secret: str) -> List[str]:
    """The ways a secret is written where yaim may show it: as it is, URL-quoted, and
    escaped by repr() (%r in a log line) or by JSON."""
    return [secret, quote(secret, safe=""), repr(secret)[1:-1], json.dumps(secret)[1:-1]]


class Secrets:
    """Every secret string of one config, to be replaced wherever it shows up in text."""

    def __init__(self, secrets: Iterable[Optional[str]] = ()) -> None:
        found = {form for s in secrets if s and len(s) >= SHORTEST_SECRET for form in _spellings(s)}
        # Longest first: a secret that contains another is replaced whole.
        self._secrets = sorted(found, key=len, reverse=True)

    @classmethod
    def of(cls, config) -> Secrets:
        """The secrets of a Config: etcd-password and the passwords in URLs and the DSN,
        each decoded and also as written in the file (escaped, quoted, percent-encoded)."""
        found = [config.etcd_password]
        for url in (*config.dcs_endpoints, config.http_url or ""):
            span = _userinfo_password(url)
            if span is not None:
                found += [url[span[0] : span[1]], url_password(url)]
        dsn = config.postgres_dsn or ""
        for (start, end), value in _dsn_passwords(dsn):
            found += [dsn[start:end], value]
        return cls(found)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def scrub(self, text: str) -> str:
        """`text` with every known secret (in each of its spellings) replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def scrub_value(self, value: Any) -> Any:
        """A JSON- or YAML-like value with every string in it scrubbed, before it is dumped
        (dumping escapes quotes and backslashes, so the dumped text can hide a secret)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_value(k): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub_value(item) for item in value]
        return value
