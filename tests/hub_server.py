"""A local, in-memory HTTP server speaking the subset of the Hugging Face Hub API that
huggingface_hub (and through it transformers, peft and sentence-transformers) uses to push and
pull model repos: create repo, validate-yaml, preupload, commit, paths-info, repo info, tree,
whoami and resolve (HEAD and GET). Every file is committed inline ("regular" upload mode), so no
LFS or Xet storage is involved.

Usage: `with LocalHub() as hub:` then point `HF_ENDPOINT` at `hub.endpoint`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

_REPO = r"(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_API_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("GET", re.compile(rf"^/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(rf"^/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
]
_RESOLVE = re.compile(r"^/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


@dataclass
class Repo:
    """A repo: its commits, newest last, each a full snapshot {path: bytes}."""

    kind: str
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)

    def snapshot(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision == "main":
            return self.commits[-1] if self.commits else ("0" * 40, {})
        return next((c for c in self.commits if c[0] == revision), None)


class HubError(Exception):
    """An HTTP error with the Hub's X-Error-Code header."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LocalHub:
    """The server: `repos` maps (kind, repo id) -> Repo; `requests` logs (method, path) pairs."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ helpers
    def _repo(self, kind: str, repo_id: str) -> Repo:
        repo = self.repos.get((kind, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository Not Found for url: {kind}/{repo_id}")
        return repo

    def _snapshot(self, kind: str, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
        snapshot = self._repo(kind, repo_id).snapshot(unquote(revision))
        if snapshot is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return snapshot

    def _url(self, kind: str, repo_id: str) -> str:
        return f"{self.endpoint}/{repo_id}" if kind == "models" else f"{self.endpoint}/{kind}/{repo_id}"

    @staticmethod
    def _file_entry(path: str, content: bytes) -> dict:
        return {"type": "file", "path": path, "size": len(content), "oid": _git_oid(content)}

    # ------------------------------------------------------------------ API handlers (return JSON)
    def create_repo(self, body: bytes, **_: str) -> tuple[int, dict]:
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if "/" not in repo_id:
            repo_id = f"tester/{repo_id}"
        kind = f"{payload.get('type') or 'model'}s"
        url = self._url(kind, repo_id)
        if (kind, repo_id) in self.repos:
            return 409, {"error": "You already created this model repo", "url": url}
        self.repos[(kind, repo_id)] = Repo(kind=kind)
        return 200, {"url": url, "name": repo_id, "id": uuid.uuid4().hex}

    def validate_yaml(self, body: bytes, **_: str) -> tuple[int, dict]:
        return 200, {"errors": [], "warnings": []}

    def whoami(self, body: bytes, **_: str) -> tuple[int, dict]:
        return 200, {"type": "user", "name": "tester", "fullname": "Test User", "orgs": [], "auth": {"type": "access_token", "accessToken": {"role": "write"}}}

    def preupload(self, body: bytes, kind: str, repo: str, rev: str) -> tuple[int, dict]:
        _, files = self._snapshot(kind, repo, rev)
        wanted = json.loads(body)["files"]
        return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": _git_oid(files[f["path"]]) if f["path"] in files else None} for f in wanted]}

    def commit(self, body: bytes, kind: str, repo: str, rev: str) -> tuple[int, dict]:
        record = self._repo(kind, repo)
        _, files = self._snapshot(kind, repo, rev)
        files = dict(files)
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif item["key"] == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            elif item["key"] != "header":
                raise HubError(400, "BadRequest", f"this local hub stores files inline only, got {item['key']!r}")
        sha = hashlib.sha1(f"{repo}{time.time_ns()}{uuid.uuid4()}".encode()).hexdigest()
        record.commits.append((sha, files))
        return 200, {"commitUrl": f"{self._url(kind, repo)}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

    def paths_info(self, body: bytes, kind: str, repo: str, rev: str) -> tuple[int, list]:
        _, files = self._snapshot(kind, repo, rev)
        paths = parse_qs(body.decode()).get("paths", [])
        return 200, [self._file_entry(p, files[p]) for p in paths if p in files]

    def tree(self, body: bytes, kind: str, repo: str, rev: str, path: str | None = None) -> tuple[int, list]:
        _, files = self._snapshot(kind, repo, rev)
        prefix = f"{path.rstrip('/')}/" if path else ""
        return 200, [self._file_entry(p, c) for p, c in sorted(files.items()) if p.startswith(prefix)]

    def repo_info(self, body: bytes, kind: str, repo: str, rev: str | None = None) -> tuple[int, dict]:
        sha, files = self._snapshot(kind, repo, rev or "main")
        return 200, {
            "_id": hashlib.md5(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "sha": sha,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": p, "size": len(c)} for p, c in sorted(files.items())],
        }

    # ------------------------------------------------------------------ file downloads
    def resolve(self, kind: str | None, repo: str, rev: str, path: str) -> tuple[dict[str, str], bytes]:
        sha, files = self._snapshot(kind or "models", repo, rev)
        path = unquote(path)
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {repo}@{rev}")
        content = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_oid(content)}"', "Content-Length": str(len(content)), "Content-Type": "application/octet-stream"}
        return headers, content


def _git_oid(content: bytes) -> str:
    """The git blob id of `content`, as the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _handler_for(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _send_json(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
            self._send(status, {"Content-Type": "application/json", **(extra or {})}, json.dumps(payload).encode())

        def _dispatch(self, method: str) -> None:
            path = urlparse(self.path).path
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hub.requests.append((method, path))
            try:
                with hub.lock:
                    for route_method, pattern, name in _API_ROUTES:
                        match = pattern.match(path)
                        if match and route_method == method:
                            status, payload = getattr(hub, name)(body, **{k: v for k, v in match.groupdict().items() if v is not None})
                            self._send_json(status, payload)
                            return
                    match = _RESOLVE.match(path)
                    if match and method in ("GET", "HEAD"):
                        headers, content = hub.resolve(**match.groupdict())
                        self._send(200, headers, content)
                        return
                raise HubError(404, "NotFound", f"the local hub does not serve {method} {path}")
            except HubError as err:
                self._send_json(err.status, {"error": err.message}, {"X-Error-Code": err.code, "X-Error-Message": err.message})

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

    return Handler
