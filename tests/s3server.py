"""A real S3 HTTP API on 127.0.0.1 for tests: moto's server, behind a small proxy that
counts the requests it forwards and can answer as S3 does when things go wrong (a 500, a
403 for a given access key, an object deleted just before it is read)."""

from __future__ import annotations

import http.client
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from moto.server import ThreadedMotoServer

KEY_ID_RE = re.compile(r"Credential=([^/]+)/")


def s3_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>proxy</RequestId></Error>").encode()


class S3Server:
    """moto on a free port, reached through a counting proxy at `url`."""

    def __init__(self) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.upstream = (host, port)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, query)
        self.listed_keys: list[str] = []  # every key a listing answered with
        self.fail_once: Counter = Counter()  # object path -> 500 answers still to give
        self.delete_before_get: set[str] = set()  # object paths deleted just before a GET
        self.reject_keys: dict[str, tuple[int, str, str]] = {}  # access key id -> answer
        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.proxy.daemon_threads = True
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.proxy.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.listed_keys.clear()
            self.fail_once.clear()
            self.delete_before_get.clear()
            self.reject_keys.clear()

    def object_gets(self) -> list[str]:
        """Paths of the object downloads seen (GETs that are not listings)."""
        return [p for m, p, q in self.requests if m == "GET" and "list-type" not in q
                and p.count("/") >= 2]

    def listings(self) -> list[dict]:
        return [q for m, _p, q in self.requests if m == "GET" and "list-type" in q]

    def stop(self) -> None:
        self.proxy.shutdown()
        self.moto.stop()

    def _forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, list, bytes]:
        con = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            con.request(method, path, body=body or None, headers=headers)
            resp = con.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            con.close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                return

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlsplit(self.path)
                path, query = unquote(url.path), parse_qs(url.query)
                with server.lock:
                    server.requests.append((self.command, path, query))
                key_id = KEY_ID_RE.search(self.headers.get("Authorization", ""))
                answer = server.reject_keys.get(key_id.group(1)) if key_id else None
                if answer is None and self.command == "GET" and "list-type" not in query:
                    with server.lock:
                        if server.fail_once[path] > 0:
                            server.fail_once[path] -= 1
                            answer = (500, "InternalError", "We encountered an internal error. Please try again.")
                        deleting = path in server.delete_before_get
                        server.delete_before_get.discard(path)
                    if deleting:
                        server._forward("DELETE", self.path, dict(self.headers), b"")
                if answer is not None:
                    self._send(answer[0], [("Content-Type", "application/xml")], s3_error(answer[1], answer[2]))
                    return
                status, headers, data = server._forward(self.command, self.path, dict(self.headers), body)
                if "list-type" in query and "delimiter" not in query:
                    with server.lock:
                        server.listed_keys += re.findall(r"<Key>([^<]*)</Key>", data.decode())
                self._send(status, headers, data)

            def _send(self, status: int, headers: list, data: bytes) -> None:
                self.send_response(status)
                length = str(len(data))
                for name, value in headers:
                    if name.lower() == "content-length" and self.command == "HEAD":
                        length = value  # a HEAD answer has no body but tells the object's size
                    elif name.lower() not in ("content-length", "transfer-encoding", "connection",
                                              "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
