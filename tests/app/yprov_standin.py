"""A STAND-IN for a yProvStore server, for tests only.

yProvStore (https://github.com/HPCI-Lab/yProvStore) cannot run here: it needs PostgreSQL, an
object store and a PID service. This stand-in implements only the two routes twinprov calls,
with the request and response shapes of these files of that repository:

* ``src/routers/authentication/router.py`` + ``_login.py``: ``POST /auth/login``, JSON
  ``{"email", "password"}`` → ``{"access_token", "token_type": "bearer"}``; 401 on a wrong
  password;
* ``src/routers/documents/router.py`` + ``_create.py`` (mounted by ``src/routers/root.py``):
  ``POST /documents``, JSON ``{"document_data": {...}}``, ``Authorization: Bearer <token>``
  (``src/routers/common/dependencies.py``), optional query parameter ``parent_document_pid``
  (404 if unknown) → ``{"pid", "version", "storage_url", "owner_email",
  "parent_document_pid"}``.

It keeps what it received in memory (:attr:`YProvStandIn.documents`) so tests can check it, and
serves on 127.0.0.1 from a thread of the test process (``http.server``, no framework).
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    """One document the stand-in accepted."""

    pid: str
    document: dict[str, Any]
    parent_pid: str | None
    version: int
    authorization: str


@dataclass
class YProvStandIn:
    """The stand-in's state: its one account and what it received."""

    email: str
    password: str
    port: int = 0
    fail_with: int | None = None
    """Answer every request with this status (e.g. 503) instead."""
    tokens: set[str] = field(default_factory=set)
    documents: dict[str, Received] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> YProvStandIn:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if state.fail_with:
                    return self._answer(state.fail_with, {"detail": "stand-in told to fail"})
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._answer(400, {"detail": "Invalid JSON data provided"})
                if url.path == "/auth/login":
                    if body.get("email") != state.email or body.get("password") != state.password:
                        return self._answer(401, {"detail": "Invalid credentials provided."})
                    token = secrets.token_urlsafe(24)
                    state.tokens.add(token)
                    return self._answer(200, {"access_token": token, "token_type": "bearer"})
                if url.path == "/documents":
                    auth = self.headers.get("Authorization", "")
                    if not auth.startswith("Bearer ") or auth[7:] not in state.tokens:
                        return self._answer(401, {"detail": "Not authenticated"})
                    if not isinstance(body.get("document_data"), dict):
                        return self._answer(400, {"detail": "document_data must be an object"})
                    parent = (parse_qs(url.query).get("parent_document_pid") or [None])[0]
                    if parent is not None and parent not in state.documents:
                        return self._answer(404, {"detail": "parent document PID not found"})
                    version = state.documents[parent].version + 1 if parent else 1
                    pid = f"21.T11148/{secrets.token_hex(8)}"
                    state.documents[pid] = Received(
                        pid, body["document_data"], parent, version, auth
                    )
                    return self._answer(
                        200,
                        {
                            "pid": pid,
                            "version": version,
                            "storage_url": f"{state.url}/storage/{pid}",
                            "owner_email": state.email,
                            "parent_document_pid": parent,
                        },
                    )
                return self._answer(404, {"detail": "Not Found"})

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
