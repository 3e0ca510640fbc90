"""One tree of errors, rooted in YaimError, so callers can catch by role."""


class YaimError(Exception):
    """Base of every error yaim raises on purpose."""


class ConfigError(YaimError):
    """The configuration is invalid; carries every problem found at once."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DCSError(YaimError):
    """The DCS could not be reached after all retries, or refused the request (wrong
    credentials, missing rights), which no retry would change."""


class CheckError(YaimError):
    """A health check could not be run at all (not the same as 'unhealthy')."""


class ActuatorError(YaimError):
    """An address could not be added to or removed from the interface."""
