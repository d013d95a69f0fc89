"""The one exception type the CLI turns into a one-line message (never a traceback)."""

from __future__ import annotations


class AutolabelError(Exception):
    """A problem the user can fix: bad input, missing weights, unreachable server.

    The message is a single line that says what is wrong and, where possible, what to do.
    """


def missing_dependency(package: str, extra_hint: str | None = None) -> AutolabelError:
    hint = extra_hint or f"pip install {package}"
    return AutolabelError(f"the optional package '{package}' is not installed: {hint}")
