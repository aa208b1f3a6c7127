"""Errors of the build step.

`OptimiseError` and its subclasses are user errors: they stop the run with a
one-line message. `PassFailed` is not a user error: it drops one candidate and
the search goes on.
"""


class OptimiseError(Exception):
    """A user error: bad path, bad config, unknown name. Stops the run."""


class SourceError(OptimiseError):
    """The model source cannot be loaded or does not export."""


class ProfileError(OptimiseError):
    """Unknown hardware profile."""


class ConfigError(OptimiseError):
    """Invalid settings for a pass, a search or the constraints."""


class StoreError(OptimiseError):
    """The model store has no such model or version, or cannot be written."""


class VersionNotFound(StoreError):
    """The model store holds no version of that name (or version prefix)."""


class PassFailed(Exception):
    """A pass could not build its candidate; only that candidate is dropped."""

    def __init__(self, pass_name: str, reason: str) -> None:
        super().__init__(f"{pass_name}: {reason}")
        self.pass_name = pass_name
        self.reason = reason


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, for reasons that must fit on one line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:limit]
