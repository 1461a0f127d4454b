"""The labelling web page: ``scanflow label QUEUE --web``, on Python's own ``http.server``.

One page, no JavaScript framework: the claimed sample as a PNG, its metadata, and one button per class
(a plain HTML form, so it works without scripts; a few lines of script add keys: press ``3`` for class
``3``). Every browser gets its own labeller name (a cookie), so two people labelling at once get different
samples. Routes: ``GET /`` the page, ``POST /label`` a label or a skip (then back to ``/``),
``GET /sample/<id>.png`` a sample's picture, ``GET /status`` the counts as JSON.

Example::

    server = LabelServer(LabelQueue("labels.db"), port=8765)
    server.serve_forever()          # or server.start() ... server.stop() in a thread
"""

from __future__ import annotations

import html
import json
import secrets
import threading
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from scanflow_core.improve.images import as_image, png_bytes
from scanflow_core.improve.queue import LabelQueue, QueueError, Sample

__all__ = ["LabelServer"]

COOKIE = "scanflow_labeller"
MAX_BODY = 64 * 1024

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 42rem; color: #222; }
h1 { font-size: 1.3rem; } .progress { color: #555; }
img.sample { image-rendering: pixelated; border: 1px solid #999; background: #000; }
.classes button { font-size: 1.4rem; min-width: 3rem; margin: 0.2rem; padding: 0.4rem 0.8rem; }
.skip { margin-top: 1rem; } table { border-collapse: collapse; margin: 0.5rem 0; }
td { padding: 0.1rem 0.6rem 0.1rem 0; color: #444; } .error { color: #b00; }
"""
_KEYS = """
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  var button = document.querySelector('button[data-key="' + CSS.escape(event.key) + '"]');
  if (button) { event.preventDefault(); button.click(); }
});
"""


class LabelServer:
    """Serve the labelling page for ``queue`` on ``host:port`` (port 0: a free one).

    Args:
        queue: the label queue (its classes make the buttons).
        host: the address to listen on; the default answers this machine only.
        port: the TCP port; 0 picks a free one (see :attr:`url`).
        scale: each pixel of a small image is shown as a ``scale x scale`` block.
        exit_when_done: stop serving once every sample is labelled.
    """

    def __init__(
        self,
        queue: LabelQueue,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        scale: int = 24,
        exit_when_done: bool = False,
    ) -> None:
        if queue.classes is None:
            raise QueueError(f"{queue.path} has no classes: give them (--classes) to make the buttons")
        self.queue = queue
        self.scale = scale
        self.exit_when_done = exit_when_done
        self.done = threading.Event()
        self._final_page_shown = threading.Event()
        self._thread: threading.Thread | None = None
        server = ThreadingHTTPServer((host, port), _Handler)
        server.daemon_threads = True
        server.label_server = self  # type: ignore[attr-defined]
        self.httpd = server

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}/"

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (or, with ``exit_when_done``, until every sample is labelled)."""
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self.httpd.server_close()

    def start(self) -> LabelServer:
        """Serve in a background thread; returns ``self``."""
        self._thread = threading.Thread(target=self.serve_forever, name="scanflow-label-web", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (and wait for the background thread, if any)."""
        self.httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _finished(self) -> None:
        """Every sample is labelled: with ``exit_when_done``, stop once the browser has been shown the
        final page (or after a few seconds, when no browser comes back for it)."""
        self.done.set()
        if self.exit_when_done:

            def stop_soon() -> None:
                self._final_page_shown.wait(timeout=5.0)
                self.httpd.shutdown()

            threading.Thread(target=stop_soon, daemon=True).start()

    # ------------------------------------------------------------------------------------------ pages

    def page(self, sample: Sample | None, message: str = "") -> str:
        counts = self.queue.counts()
        progress = f"{counts['labelled']} of {counts['total']} labelled"
        error = f'<p class="error" id="error">{html.escape(message)}</p>' if message else ""
        if sample is None:
            if message:
                return _document(progress, f'{error}<p><a href="/">Back to labelling</a></p>')
            if counts["unlabelled"] == 0:
                if self.done.is_set():
                    self._final_page_shown.set()
                body = f'<p id="done">All {counts["total"]} samples are labelled.</p>'
            else:
                body = (
                    f'<p id="waiting">{counts["unlabelled"]} samples are being labelled by others; '
                    "reload this page later.</p>"
                )
            return _document(progress, body)
        picture = (
            f'<img class="sample" id="sample" alt="sample {html.escape(sample.id)}" '
            f'src="/sample/{quote(sample.id, safe="")}.png">'
            if sample.data is not None and as_image(sample.data) is not None
            else f"<p>{html.escape(sample.ref or 'no picture for this sample')}</p>"
        )
        rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
            for k, v in sample.metadata.items()
        )
        buttons = "".join(
            f'<button type="submit" name="label" value="{html.escape(str(c))}" '
            f'id="label-{html.escape(str(c))}"'
            + (f' data-key="{html.escape(str(c))}"' if len(str(c)) == 1 else "")
            + f">{html.escape(str(c))}</button>"
            for c in self.queue.classes or []
        )
        body = (
            f'{error}<p>Sample <code id="sample-id">{html.escape(sample.id)}</code></p>{picture}'
            f"<table>{rows}</table>"
            '<form method="post" action="/label">'
            f'<input type="hidden" name="id" value="{html.escape(sample.id)}">'
            f'<div class="classes">{buttons}</div>'
            '<div class="skip"><button type="submit" name="action" value="skip" id="skip">Skip</button></div>'
            f"</form><script>{_KEYS}</script>"
        )
        return _document(progress, body)


def _document(progress: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Scanflow labelling</title>'
        f"<style>{_STYLE}</style></head><body><h1>Label this sample</h1>"
        f'<p class="progress" id="progress">{progress}</p>{body}</body></html>'
    )


class _Handler(BaseHTTPRequestHandler):
    server_version = "scanflow-label"

    @property
    def app(self) -> LabelServer:
        app: LabelServer = self.server.label_server  # type: ignore[attr-defined]
        return app

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the page is the interface
        return

    def _labeller(self) -> tuple[str, str | None]:
        """The browser's labeller name, and a new cookie value when it had none."""
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if COOKIE in cookie and cookie[COOKIE].value.isalnum():
            return f"web-{cookie[COOKIE].value}", None
        token = secrets.token_hex(8)
        return f"web-{token}", token

    def _send(
        self, status: int, body: bytes, kind: str, cookie: str | None = None, location: str | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if cookie is not None:
            self.send_header("Set-Cookie", f"{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict")
        if location is not None:
            self.send_header("Location", location)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, status: int, text: str, cookie: str | None = None) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8", cookie)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/":
                labeller, cookie = self._labeller()
                self._html(HTTPStatus.OK, self.app.page(self.app.queue.next(labeller)), cookie)
            elif path == "/status":
                body = json.dumps(self.app.queue.counts()).encode()
                self._send(HTTPStatus.OK, body, "application/json")
            elif path.startswith("/sample/") and path.endswith(".png"):
                sample = self.app.queue.get(unquote(path[len("/sample/") : -len(".png")]))
                if sample.data is None:
                    raise QueueError(f"sample {sample.id!r} has no array to draw")
                self._send(HTTPStatus.OK, png_bytes(sample.data, scale=self._scale(sample)), "image/png")
            else:
                self._html(HTTPStatus.NOT_FOUND, _document("", f"<p>No page {html.escape(path)}.</p>"))
        except (QueueError, ValueError) as exc:
            self._html(HTTPStatus.NOT_FOUND, _document("", f'<p class="error">{html.escape(str(exc))}</p>'))

    def _scale(self, sample: Sample) -> int:
        image = as_image(sample.data)
        side = max(image.shape[:2]) if image is not None else 1
        return max(1, min(self.app.scale, 512 // max(side, 1)))

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/label":
            self._html(HTTPStatus.NOT_FOUND, _document("", "<p>Post labels to /label.</p>"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._html(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _document("", "<p>Too much data.</p>"))
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        sample_id = form.get("id", [""])[0]
        labeller, _ = self._labeller()
        queue = self.app.queue
        try:
            if form.get("action", [""])[0] == "skip":
                queue.skip(sample_id, labeller)
            elif "label" not in form:
                raise QueueError("the form had no label: press one of the class buttons")
            else:
                queue.submit(sample_id, form["label"][0], labeller=labeller)
        except QueueError as exc:
            sample = queue.get(sample_id) if _exists(queue, sample_id) else None
            self._html(HTTPStatus.BAD_REQUEST, self.app.page(sample, str(exc)))
            return
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", location="/")
        if queue.counts()["unlabelled"] == 0:
            self.app._finished()


def _exists(queue: LabelQueue, sample_id: str) -> bool:
    try:
        queue.get(sample_id)
    except QueueError:
        return False
    return True
