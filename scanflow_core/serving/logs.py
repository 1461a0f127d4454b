"""One log line per request: NCSA combined log format, extended with what MLSpec asks of an inference.

A line is the combined format (host, ident, user, time, request line, status, bytes, referer, user
agent) followed by ``key=value`` fields whose values are compact JSON (``"text"``, numbers,
``null``, lists)::

    127.0.0.1 - alice [23/Nov/2026:04:01:02 +0000] "POST /predict HTTP/1.1" 200 187 "-" "curl/8.5"
    request_id="6f1c..." user_id="alice" model="digits" model_version="3" variant="original"
    latency_ms=1.23 rows=1 input_sha256="sha256:..." prediction=[[...]] attestation="sha256:..."

(one line; wrapped here). The user is the ``X-User-Id`` header (``-`` without one); ``input`` (the
raw input) is only written when the server was started with ``--log-inputs``. :func:`parse_line`
reads a line back into a :class:`LogRecord`.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from scanflow_core.serving.payloads import dumps

__all__ = ["FIELDS", "InferenceLog", "LogRecord", "format_line", "parse_line"]

#: The extension fields, in the order they are written.
FIELDS = (
    "request_id",
    "user_id",
    "model",
    "model_version",
    "variant",
    "latency_ms",
    "rows",
    "input_sha256",
    "prediction",
    "attestation",
    "input",
    "error",
)

_COMBINED = re.compile(
    r'^(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"'
)
_KEY = re.compile(r" ([a-z_][a-z0-9_]*)=")
_TOKEN = re.compile(r"[^A-Za-z0-9._@:+\-]")
_decoder = json.JSONDecoder()


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unquoted(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def user_token(user: str | None) -> str:
    """The user as NCSA's ``authuser`` field: ``-`` when unknown, otherwise only safe characters."""
    return _TOKEN.sub("_", user)[:128] if user else "-"


_clock = threading.local()


def _stamp(now: float) -> str:
    second = int(now)
    if getattr(_clock, "second", None) != second:
        _clock.second = second
        _clock.text = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
    text: str = _clock.text
    return text


def format_line(
    *,
    host: str,
    user: str | None,
    method: str,
    path: str,
    protocol: str,
    status: int,
    size: int,
    referer: str | None,
    agent: str | None,
    fields: dict[str, Any],
    now: float | None = None,
) -> str:
    """One log line (without the newline) for a request answered ``status`` with ``size`` bytes."""
    request = _quoted(f"{method} {path} HTTP/{protocol}")
    head = (
        f'{host or "-"} - {user_token(user)} [{_stamp(time.time() if now is None else now)}] "{request}" '
        f'{status} {size} "{_quoted(referer or "-")}" "{_quoted(agent or "-")}"'
    )
    extra = " ".join(f"{k}={dumps(fields[k]).decode()}" for k in FIELDS if k in fields)
    return f"{head} {extra}" if extra else head


@dataclass(frozen=True)
class LogRecord:
    """One parsed line: the combined-format fields and the extension ``fields`` (JSON values)."""

    host: str
    user: str | None
    time: str
    method: str
    path: str
    protocol: str
    status: int
    size: int | None
    referer: str | None
    agent: str | None
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def parse_line(line: str) -> LogRecord:
    """Read a line written by :func:`format_line`.

    Raises:
        ValueError: the line is not in this format (the message says where it stops matching).
    """
    line = line.rstrip("\n")
    match = _COMBINED.match(line)
    if match is None:
        raise ValueError(f"not an NCSA combined log line: {line[:120]!r}")
    request = _unquoted(match["request"])
    method, _, rest = request.partition(" ")
    path, _, protocol = rest.rpartition(" ")
    fields: dict[str, Any] = {}
    position = match.end()
    while position < len(line):
        key = _KEY.match(line, position)
        if key is None:
            raise ValueError(
                f"expected ' key=value' at column {position}: {line[position : position + 40]!r}"
            )
        try:
            value, position = _decoder.raw_decode(line, key.end())
        except ValueError:
            raise ValueError(f"field {key.group(1)!r} at column {key.end()} is not JSON") from None
        fields[key.group(1)] = value
    size = match["size"]
    referer, agent = _unquoted(match["referer"]), _unquoted(match["agent"])
    return LogRecord(
        host=match["host"],
        user=None if match["user"] == "-" else match["user"],
        time=match["time"],
        method=method,
        path=path,
        protocol=protocol.removeprefix("HTTP/"),
        status=int(match["status"]),
        size=None if size == "-" else int(size),
        referer=None if referer == "-" else referer,
        agent=None if agent == "-" else agent,
        fields=fields,
    )


class InferenceLog:
    """Where the lines go: a file (appended, line-buffered) or standard output (``None`` or ``-``).

    Writes happen on the event loop; a write error is counted, never raised into a request.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path in (None, "-") else Path(str(path))
        self.errors = 0
        self._lock = threading.Lock()
        self._stream: IO[str]
        if self.path is None:
            self._stream, self._own = sys.stdout, False
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream, self._own = self.path.open("a", encoding="utf-8", buffering=1), True

    def write(self, line: str) -> None:
        try:
            with self._lock:
                self._stream.write(line + "\n")
        except (OSError, ValueError):
            self.errors += 1

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self.errors += 1

    def close(self) -> None:
        self.flush()
        if self._own:
            self._stream.close()
