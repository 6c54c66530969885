"""A tiny loopback HTTP proxy in front of the moto S3 server: fault injection on the wire.

It forwards every request unchanged and records ``(method, path, Range header)``; while ``fail_next`` is above
zero (or ``fail_always`` is set) it answers ``503 Slow Down`` instead, the way S3 itself throttles.
The library under test talks to it through its ordinary endpoint override: nothing is patched.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.requests: list[tuple[str, str, str | None]] = []
        self.fail_next = 0
        self.fail_always = False
        self.failed = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.fail_next, self.fail_always, self.failed = 0, False, 0

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [unquote(p) for m, p, _ in self.requests if method is None or m == method]

    def ranges(self, path: str) -> list[tuple[int, int]]:
        """Byte ranges ``[lo, hi)`` of the GETs of ``path`` (a whole-object GET is (0, inf))."""
        out = []
        with self._lock:
            for m, p, rng in self.requests:
                if m != "GET" or unquote(p.split("?")[0]) != path:
                    continue
                if rng and rng.startswith("bytes="):
                    lo, _, hi = rng[6:].partition("-")
                    out.append((int(lo), int(hi) + 1 if hi else 2**62))
                else:
                    out.append((0, 2**62))
        return out

    def _should_fail(self, method: str, path: str, rng: str | None) -> bool:
        with self._lock:
            self.requests.append((method, path, rng))
            if self.fail_always or self.fail_next > 0:
                self.fail_next = max(0, self.fail_next - 1)
                self.failed += 1
                return True
            return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy._should_fail(self.command, self.path, self.headers.get("Range")):
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(_SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD answer carries the object's length, not the (empty) body's
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        return Handler
