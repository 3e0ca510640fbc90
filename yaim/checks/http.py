"""`checker-type: http`: a GET whose status code and body say whether the service is healthy.

The GET goes through yaim.httpclient (the standard library's http.client, not requests:
see there why) on one kept-alive connection where the service keeps it open. A kept-alive
connection the service dropped as the GET went out is the same check sent once more on a
new connection; one that fails again is unhealthy, as any failed GET. An https URL is
verified against the system's CAs; no proxy from the environment is used, the service is
asked directly. A user:password@ in the URL goes as Basic authorization.

The reason names the URL with its password masked: it goes to the log, /health,
/status and the notify commands' YAIM_REASON.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from yaim.checks import BaseChecker, CheckResult
from yaim.httpclient import Client, HTTPFailure, Timeout
from yaim.redact import mask_url


class Checker(BaseChecker):
    """GET `http-url`: healthy iff the expected code comes back with the expected substring."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.url, self.target = "", "/"  # `http-url`, and its path and query
        self.client: Optional[Client] = None

    def _client(self) -> Client:
        """The client of `http-url` (the connection kept for the next checks)."""
        url = self.config.http_url
        if self.client is None or url != self.url:
            self.close()
            parts = urlsplit(url)
            base = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
            self.client = Client(base, self.config.check_timeout_s)
            self.url, self.target = url, urlunsplit(("", "", parts.path or "/", parts.query, ""))
        return self.client

    def check(self) -> CheckResult:
        shown = mask_url(self.config.http_url)
        try:
            response = self._client().request("GET", self.target, retry_reused=True)
        except HTTPFailure as exc:
            kind = "Timeout" if isinstance(exc, Timeout) else "ConnectionError"
            return CheckResult(False, f"GET {shown} failed: {kind}")
        expected = self.config.http_expected_code
        if response.status != expected:
            return CheckResult(
                False, f"GET {shown} answered {response.status}, expected {expected}"
            )
        needle = self.config.http_expected_response_contains
        if needle and needle not in response.text:
            return CheckResult(False, f"GET {shown}: body does not contain {needle!r}")
        return CheckResult(True, f"GET {shown} answered {response.status}")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
