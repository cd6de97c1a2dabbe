"""A local HTTP server in the Hugging Face Hub's URL layout, for real downloads in tests (127.0.0.1).

Serves what `huggingface_hub` and a ranged download ask for:
- `HEAD|GET /OWNER/REPO/resolve/REV/PATH`: a 302 to `/cdn/SHA256` on the other name of this machine
  (`localhost` for `127.0.0.1`, as the Hub sends large files to its CDN's host), with
  `X-Repo-Commit`, `X-Linked-Etag` (the file's sha256) and `X-Linked-Size`;
- `GET /cdn/SHA256`: the bytes, honouring `Range: bytes=N-` (206 + Content-Range);
- `GET /api/models/OWNER/REPO/tree/REV`: the repository's files, with their LFS sha256;
- 404 with `X-Error-Code: RepoNotFound` / `EntryNotFound` as the Hub answers.

Faults to test against: `cut_after` (send the headers for the whole file, then close the connection
after N bytes, for the next K requests), `corrupt` (serve bytes that differ from the advertised sha256),
`ignore_range` (answer 200 with the whole file to a ranged request). Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class HubServer:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # OWNER/REPO -> path -> bytes
    requests: list[Request] = field(default_factory=list)
    cut_after: dict[str, tuple[int, int]] = field(default_factory=dict)  # sha256 -> (bytes, times)
    corrupt: set[str] = field(default_factory=set)  # sha256s served with one byte changed
    ignore_range: bool = False

    def __post_init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add(self, repo: str, path: str, data: bytes) -> str:
        """Publish a file; returns its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        self.repos.setdefault(repo, {})[path] = data
        self._blobs[sha] = data
        return sha

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def blob_gets(self) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path.startswith("/cdn/")]


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _record(self) -> None:
            with hub._lock:
                hub.requests.append(
                    Request(
                        self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization")
                    )
                )

        def _error(self, code: int, error_code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(code)
            self.send_header("X-Error-Code", error_code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, value: object) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self, head: bool) -> None:
            self._record()
            path = unquote(urlsplit(self.path).path)
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
                return self._tree("/".join(parts[2:4]))
            if parts[0] == "cdn" and len(parts) == 2:
                return self._blob(parts[1], head)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("/".join(parts[:2]), "/".join(parts[4:]))
            return self._error(404, "RepoNotFound", "Repository not found")

        def _tree(self, repo: str) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            listing = [
                {
                    "type": "file",
                    "oid": hashlib.sha1(data).hexdigest(),
                    "size": len(data),
                    "path": p,
                    "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134},
                }
                for p, data in files.items()
            ]
            self._json(listing)

        def _resolve(self, repo: str, file: str) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            if file not in files:
                return self._error(404, "EntryNotFound", "Entry not found")
            data = files[file]
            sha = hashlib.sha256(data).hexdigest()
            self.send_response(302)
            # The CDN is another host (as the Hub's is): the other name of this machine.
            port = hub._server.server_address[1]
            asked = (self.headers.get("Host") or "").split(":")[0]
            cdn = "127.0.0.1" if asked == "localhost" else "localhost"
            self.send_header("Location", f"http://{cdn}:{port}/cdn/{sha}")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _blob(self, sha: str, head: bool) -> None:
            data = hub._blobs.get(sha)
            if data is None:
                return self._error(404, "EntryNotFound", "Entry not found")
            if sha in hub.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            start = 0
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes=") and not hub.ignore_range:
                start = int(ranged[len("bytes=") :].split("-", 1)[0])
            if start >= len(data) and start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if head:
                return
            limit = len(body)
            with hub._lock:
                cut = hub.cut_after.get(sha)
                if cut is not None and cut[1] > 0:
                    limit = min(limit, max(0, cut[0] - start))
                    hub.cut_after[sha] = (cut[0], cut[1] - 1)
            self.wfile.write(body[:limit])
            if limit < len(body):
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

    return Handler
