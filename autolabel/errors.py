"""The one exception type the CLI turns into a one-line message (never a traceback)."""

from __future__ import annotations

__all__ = [
    "AutolabelError",
    "first_line",
    "missing_dependency",
    "read_text",
]


class AutolabelError(Exception):
    """A problem the user can fix: bad input, missing weights, unreachable server.

    The message is a single line that says what is wrong and, where possible, what to do.
    """


def read_text(path, what: str = "file") -> str:
    """A user's text file (YAML, YOLO .txt, COCO JSON) as UTF-8, or one AutolabelError line saying
    which file, where the first bad byte is, and what to do."""
    from pathlib import Path

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AutolabelError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AutolabelError(
            f"{what} {path} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}): save it as UTF-8"
        ) from None


def missing_dependency(package: str, extra_hint: str | None = None) -> AutolabelError:
    hint = extra_hint or f"pip install {package}"
    return AutolabelError(f"the optional package '{package}' is not installed: {hint}")


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first line of an exception's message (libraries' messages often span many), for a
    one-line error; ``default`` (else the exception's type name) when the message is empty."""
    lines = str(exc).strip().splitlines()
    if lines:
        return lines[0]
    return type(exc).__name__ if default is None else default
