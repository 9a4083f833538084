"""The test web app, served on 127.0.0.1 (a free port) by a thread: a login form with a
password and a one-time-code field, a select, a same-origin iframe, an open shadow-DOM widget
and a single-page-app navigation (history.pushState to /reports, which a reload serves too)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGES = {"/": "index.html", "/reports": "index.html", "/frame.html": "frame.html"}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server's method name
        name = PAGES.get(self.path.split("?")[0])
        if name is None:
            self.send_error(404)
            return
        body = (HERE / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class WebApp:
    """Serves the app on ``http://127.0.0.1:<port>/`` until :meth:`close`."""

    def __init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
