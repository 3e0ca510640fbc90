"""What a test needs from the machine: without it the test is skipped on a laptop, but
under CI=true a missing capability is a failure, never a skip."""

from __future__ import annotations

import os
from typing import Optional

import pytest


def skip_or_fail(problem: Optional[str]) -> None:
    """Nothing if `problem` is None; else skip the current test, or fail it under CI=true."""
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("cannot run under CI=true: " + problem, pytrace=False)
    pytest.skip(problem)
