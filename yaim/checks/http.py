"""`checker-type: http`: a GET whose status code and body say whether the service is healthy.

The reason names the URL with its password masked: it goes to the log, /health,
/status and the notify commands' YAIM_REASON.
"""

from __future__ import annotations

import requests

from yaim.checks import BaseChecker, CheckResult
from yaim.redact import mask_url


class Checker(BaseChecker):
    """GET `http-url`: healthy iff the expected code comes back with the expected substring."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.session = requests.Session()

    def check(self) -> CheckResult:
        shown = mask_url(self.config.http_url)
        try:
            response = self.session.get(
                self.config.http_url, timeout=self.config.check_timeout_s, allow_redirects=False
            )
        except requests.RequestException as exc:
            return CheckResult(False, f"GET {shown} failed: {type(exc).__name__}")
        expected = self.config.http_expected_code
        if response.status_code != expected:
            return CheckResult(
                False, f"GET {shown} answered {response.status_code}, expected {expected}"
            )
        needle = self.config.http_expected_response_contains
        if needle and needle not in response.text:
            return CheckResult(False, f"GET {shown}: body does not contain {needle!r}")
        return CheckResult(True, f"GET {shown} answered {response.status_code}")

    def close(self) -> None:
        self.session.close()
