"""Property tests of yaim.redact: the masked text never holds the password, the rest of
the URL or connection string is left as written, and Secrets finds every spelling.

libpq itself (through psycopg's `conninfo_to_dict`) is the oracle for what a
connection string's password is, so the hand-written parser is checked against the
reader that matters, not against a second copy of its own rules.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace
from typing import List, Optional, Tuple
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from yaim import cli
from yaim.checks import http
from yaim.redact import MASK, Secrets, dsn_passwords, mask_dsn, mask_url, url_password

try:
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # psycopg is a test dependency; without it only the oracle tests skip
    conninfo_to_dict = None

needs_libpq = pytest.mark.skipif(conninfo_to_dict is None, reason="needs psycopg (libpq)")
fast = settings(max_examples=300, deadline=None)

# What makes passwords hard to mask: spaces, quotes, backslashes, '=', '@' and the
# URL delimiters, beside ordinary and non-ASCII characters. No NUL: libpq reads C strings.
HARD = " \t'\"\\=@:/?&#%+*\x1c\xa0"
passwords = st.text(
    st.sampled_from(HARD) | st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
    min_size=1,
    max_size=20,
)
OTHER = [("host", "db.example"), ("port", "6432"), ("user", "yaim"), ("dbname", "app")]
PASSWORD_KEYS = ("password", "sslpassword")


def quoted(value: str) -> str:
    """libpq's single-quoted form: backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def escaped(value: str) -> str:
    """libpq's unquoted form, escaping only what must be: its (ASCII) whitespace, the
    backslash and the quote, so that other spaces (no-break, \\x1c) stay as they are."""
    return "".join("\\" + c if c in " \t\n\r\f\v\\'" else c for c in value)


def escaped_all(value: str) -> str:
    """libpq's unquoted form with every character that is not a letter or digit escaped."""
    return "".join(c if c.isalnum() and c.isascii() else "\\" + c for c in value)


@st.composite
def keyword_dsns(draw) -> Tuple[str, str, List[str]]:
    """(connection string, the same with every password written as ***, the passwords)."""
    pairs = draw(st.lists(st.sampled_from(OTHER), max_size=4))
    secrets = draw(st.lists(st.tuples(st.sampled_from(PASSWORD_KEYS), passwords), min_size=1))
    items = [(k, v, False) for k, v in pairs] + [(k, v, True) for k, v in secrets]
    items = draw(st.permutations(items))
    written, masked = [], []
    for key, value, secret in items:
        around = draw(st.sampled_from(["=", " = ", "=  ", "\t=\t"]))
        text = draw(st.sampled_from([quoted, escaped, escaped_all]))(value)
        written.append(key + around + text)
        masked.append(key + around + (MASK if secret else text))
    space = draw(st.sampled_from([" ", "  ", "\t", "\n"]))
    return space.join(written), space.join(masked), [v for _, v, s in items if s]


@needs_libpq
@fast
@given(keyword_dsns())
def test_keyword_dsn_passwords_are_what_libpq_reads(case):
    dsn, _, secrets = case
    read = conninfo_to_dict(dsn)
    found = dsn_passwords(dsn)
    assert found == secrets
    for key in PASSWORD_KEYS:
        if key in read:
            assert read[key] in found
    # libpq reads the masked string as the same string with *** for each password
    assert {k: v for k, v in conninfo_to_dict(mask_dsn(dsn)).items() if k in PASSWORD_KEYS} == {
        k: MASK for k in PASSWORD_KEYS if k in read
    }


@fast
@given(keyword_dsns())
def test_keyword_dsn_masked_keeps_the_rest_and_no_part_of_a_password(case):
    dsn, expected, secrets = case
    shown = mask_dsn(dsn)
    rest = expected.split(MASK)  # the other pairs, as written
    for secret in secrets:
        for written in (secret, quoted(secret), escaped(secret), escaped_all(secret)):
            if "*" not in written and not any(written in piece for piece in rest):
                assert written not in shown
    assert shown == expected


@pytest.mark.parametrize(
    "dsn, shown, secret",
    [
        (
            r"host=db password=a\ b\ S3cret port=5432",
            "host=db password=*** port=5432",
            "a b S3cret",
        ),
        (r"password='a b\' S3cret' user=x", "password=*** user=x", "a b' S3cret"),
        ("password=S3cret\\", "password=***", "S3cret"),  # libpq drops a trailing backslash
        # libpq's whitespace is ASCII only: \x1c and a no-break space are part of the password
        ("password=ab\x1cS3cret host=x", "password=*** host=x", "ab\x1cS3cret"),
        ("password=ab\xa0S3cret host=x", "password=*** host=x", "ab\xa0S3cret"),
        ("sslpassword = S3cret dbname=x", "sslpassword = *** dbname=x", "S3cret"),
        ("password= host=x", "password= ***", "host=x"),  # libpq takes the next word
    ],
)
def test_escaped_keyword_passwords_are_masked_whole(dsn, shown, secret):
    assert mask_dsn(dsn) == shown
    assert dsn_passwords(dsn) == [secret]
    if conninfo_to_dict is not None:
        assert conninfo_to_dict(dsn).get("password", secret) == secret


@st.composite
def uri_dsns(draw) -> Tuple[str, str, List[str]]:
    """A postgresql:// URI with a password in the user information and/or in ?password=
    / ?sslpassword=, percent-encoded; the same with ***; the passwords."""
    secrets, head, masked_head = [], "postgresql://", "postgresql://"
    if draw(st.booleans()):
        secret = draw(passwords)
        secrets.append(secret)
        head += f"yaim:{quote(secret, safe='')}@"
        masked_head += f"yaim:{MASK}@"
    tail = draw(st.sampled_from(["db.example", "db.example:6432", "[2001:db8::5]:5432"]))
    tail += draw(st.sampled_from(["", "/app"]))
    params, masked = [], []
    for key in draw(st.lists(st.sampled_from(["sslmode", "application_name", *PASSWORD_KEYS]))):
        value = draw(passwords)
        params.append(f"{key}={quote(value, safe='')}")
        if key in PASSWORD_KEYS:
            secrets.append(value)
            masked.append(f"{key}={MASK}")
        else:
            masked.append(params[-1])
    assume(secrets)
    query = ("?" + "&".join(params)) if params else ""
    masked_query = ("?" + "&".join(masked)) if params else ""
    if query and "/" not in tail:
        tail += "/"
    return head + tail + query, masked_head + tail + masked_query, secrets


@fast
@given(uri_dsns())
def test_uri_dsn_masked_keeps_the_rest_and_finds_every_password(case):
    dsn, expected, secrets = case
    assert mask_dsn(dsn) == expected
    assert dsn_passwords(dsn) == secrets


@needs_libpq
@fast
@given(uri_dsns())
def test_uri_dsn_passwords_are_what_libpq_reads(case):
    dsn, _, _ = case
    read = conninfo_to_dict(dsn)
    found = dsn_passwords(dsn)
    assert all(read[key] in found for key in PASSWORD_KEYS if key in read)
    masked = conninfo_to_dict(mask_dsn(dsn))
    assert all(masked[key] == MASK for key in PASSWORD_KEYS if key in read)


@pytest.mark.parametrize(
    "dsn, shown",
    [
        (
            "postgresql://u:p@db/x?password=a+b&application_name=x+y&sslpassword=q%20r",
            "postgresql://u:***@db/x?password=***&application_name=x+y&sslpassword=***",
        ),
        # libpq reads the user information to '@', over a '?'; the query comes after
        ("postgresql://u:p?z@db/x?password=S3cret", "postgresql://u:***@db/x?password=***"),
        ("postgresql://db/x?%70assword=S3cret&sslmode=require", None),  # an encoded name
        ("postgresql://u:p@[2001:db8::1/x", "postgresql://u:***@[2001:db8::1/x"),  # bad IPv6
    ],
)
def test_uri_passwords_are_masked_as_libpq_reads_them(dsn, shown):
    masked = mask_dsn(dsn)
    if shown is not None:
        assert masked == shown
    assert "S3cret" not in masked and "a+b" not in masked and "q%20r" not in masked
    if conninfo_to_dict is not None and "[2001:db8::1/" not in dsn:
        read = conninfo_to_dict(dsn)
        assert all(read[k] in dsn_passwords(dsn) for k in PASSWORD_KEYS if k in read)


USERINFO_SAFE = "".join(c for c in HARD if c not in "/?#%") + "aZ9é"


@st.composite
def urls(draw) -> Tuple[str, str, Optional[str]]:
    """(an http URL, the same with its password as ***, the password), the password
    either percent-encoded or written raw with the characters that need no encoding."""
    user = draw(st.sampled_from(["", "admin", "a%40b"]))
    secret = draw(passwords)
    raw = draw(st.booleans()) and all(c in USERINFO_SAFE for c in secret)
    written = secret if raw else quote(secret, safe="")
    host = draw(st.sampled_from(["127.0.0.1:8008", "db.example", "[2001:db8::1]:80"]))
    rest = draw(st.sampled_from(["", "/health", "/a@b?x=1:2@c#f"]))
    return (
        f"http://{user}:{written}@{host}{rest}",
        f"http://{user}:{MASK}@{host}{rest}",
        secret,
    )


@fast
@given(urls())
def test_url_masked_keeps_the_rest_and_the_password_is_what_urlsplit_reads(case):
    url, expected, secret = case
    assert mask_url(url) == expected
    assert url_password(url) == secret
    assert urlsplit(mask_url(url)).password == MASK


@fast
@given(st.text(max_size=40), st.text(max_size=40))
def test_mask_url_never_raises_and_leaves_urlsplit_no_password_but_the_mask(netloc, rest):
    url = "http://" + netloc + rest
    masked = mask_url(url)  # never raises, where urlsplit can
    try:
        before, after = urlsplit(url).password, urlsplit(masked).password
    except ValueError:
        return
    # the masked span is wider than urlsplit's (libpq reads to the first '/'), never narrower
    assert after == MASK if before is not None else after in (None, MASK)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://admin:pw@127.0.0.1:8008/health", "http://admin:***@127.0.0.1:8008/health"),
        ("http://admin:a#b@host/", "http://admin:***@host/"),  # not a URL to urlsplit
        ("http://admin:pw@[2001:db8::1/x", "http://admin:***@[2001:db8::1/x"),  # bad IPv6
        ("http://127.0.0.1:2379", "http://127.0.0.1:2379"),
        ("http://host/path@x:y", "http://host/path@x:y"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url_examples(url, shown):
    assert mask_url(url) == shown


CONFIG = SimpleNamespace(etcd_password=None, dcs_endpoints=(), http_url=None, postgres_dsn=None)


def secrets_of(**settings) -> Secrets:
    """The Secrets of a config with only these secret-bearing settings."""
    return Secrets.of(SimpleNamespace(**{**vars(CONFIG), **settings}))


def test_secrets_of_a_config_know_every_password_as_written_and_as_meant():
    found = secrets_of(
        etcd_password="EtcdS3cret",
        dcs_endpoints=("http://root:Dcs%53ecret@192.0.2.1:2379",),
        http_url="http://admin:Http%2BS3cret@127.0.0.1:8008/health",
        postgres_dsn=r"host=db password=a\ b\ PgS3cret sslpassword='Ssl S3cret'",
    )
    text = (
        "EtcdS3cret DcsSecret Dcs%53ecret Http+S3cret Http%2BS3cret"
        r" a b PgS3cret a\ b\ PgS3cret Ssl S3cret"
    )
    assert found.scrub(text).split() == [MASK] * 5 + [MASK, MASK, MASK]
    assert "S3cret" not in found.scrub(text) and "Secret" not in found.scrub(text)


@given(
    st.text(max_size=30),
    passwords.filter(lambda s: len(s) >= 3 and "*" not in s),
    st.text(max_size=30),
)
def test_scrub_leaves_no_spelling_of_the_secret(before, secret, after):
    found = Secrets([secret])
    for spelled in (secret, quote(secret, safe=""), repr(secret)[1:-1], json.dumps(secret)[1:-1]):
        assert spelled not in found.scrub(before + spelled + after)


def test_short_secrets_are_not_replaced_in_free_text():
    assert Secrets(["ab", None, ""]).scrub("ab cd") == "ab cd"
    assert not Secrets(["ab"])


def test_scrub_value_reaches_every_string_before_it_is_dumped():
    found = Secrets(['q"\\S3cret'])
    value = {"reason": 'GET failed: q"\\S3cret', "list": [('q"\\S3cret', 1)], "n": 2.5}
    dumped = json.dumps(found.scrub_value(value))
    assert "S3cret" not in dumped
    assert json.loads(dumped) == {"reason": "GET failed: ***", "list": [["***", 1]], "n": 2.5}


# --- where the masks are used: the log and the http checker's reason ---


def test_log_lines_are_scrubbed_whole_with_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    inner = logging.Formatter(cli.LOG_FORMAT)
    handler.setFormatter(cli.ScrubbingFormatter(inner, secrets_of(etcd_password="Etcd'S3cret")))
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("login with Etcd%27S3cret failed")
        except ValueError:
            logger.error("failed: %r", {"password": "Etcd'S3cret"}, exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "ValueError: login with *** failed" in text and "failed: {'password': \"***\"}" in text
    assert "S3cret" not in text


def test_a_reload_adds_the_new_files_secrets_to_the_log_masks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(cli.ScrubbingFormatter(logging.Formatter(), secrets_of()))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        cli.mask_in_logs(SimpleNamespace(**{**vars(CONFIG), "etcd_password": "OldS3cret"}))
        cli.mask_in_logs(SimpleNamespace(**{**vars(CONFIG), "etcd_password": "NewS3cret"}))
        root.warning("NewS3cret OldS3cret")
    finally:
        root.removeHandler(handler)
    assert stream.getvalue() == "*** ***\n"


@pytest.fixture
def health_server():
    """A local HTTP server answering every GET with the status code in `codes[0]`."""
    codes = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(codes[0])
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1], codes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_http_checks_reason_shows_the_url_with_its_password_masked(health_server):
    port, codes = health_server
    url = f"http://admin:HttpS3cret@127.0.0.1:{port}/health"
    settings = {"http_expected_code": 200, "http_expected_response_contains": None}
    checker = http.Checker(SimpleNamespace(http_url=url, check_timeout_s=2, **settings))
    shown = f"GET http://admin:***@127.0.0.1:{port}/health"
    try:
        assert checker.check() == (True, f"{shown} answered 200")
        codes[0] = 500
        assert checker.check() == (False, f"{shown} answered 500, expected 200")
        checker.config.http_expected_code = 500
        checker.config.http_expected_response_contains = "nothing"
        assert checker.check() == (False, f"{shown}: body does not contain 'nothing'")
        checker.config.http_url = "http://admin:HttpS3cret@127.0.0.1:1/health"  # closed
        assert checker.check() == (
            False,
            "GET http://admin:***@127.0.0.1:1/health failed: ConnectionError",
        )
    finally:
        checker.close()
