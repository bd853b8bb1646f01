"""helpers.hub against local listeners on 127.0.0.1 (started by each test, stopping by
themselves): a fake hub answering with the status codes and X-Error-Code headers the hub
sends (gated, missing repo, missing revision), a silent endpoint (accepts, never answers,
plain and TLS), one that speaks garbage, and an HTTPS proxy. Every request goes through the
real huggingface_hub client pointed at HF_ENDPOINT; nothing in the client is mocked."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from helpers import data, hub, models
from helpers import qa
import helpers.qa.babi, helpers.qa.cotempqa, helpers.qa.marco  # noqa: E401,F401

SHA = "0123456789abcdef0123456789abcdef01234567"
GOOD, BAD = "hf_good_token_for_tests", "hf_bad_token_for_tests"
LIFETIME = 60.0  # every listener stops by itself after this many seconds


# ------------------------------------------------------------------------------ listeners
class FakeHub:
    """An HTTP server on 127.0.0.1 that answers hub API requests like the hub:

    * ``/api/{models,datasets}/<repo>/auth-check``: 200, or for a gated repo 401 (no token)
      / 403 (token without access) with ``X-Error-Code: GatedRepo``;
    * ``/api/{models,datasets}/<repo>[/revision/<rev>]``: the repo info with ``sha``; an
      unknown repo 401 ``RepoNotFound``, an unknown revision 404 ``RevisionNotFound``;
    * ``/api/datasets/<repo>/commits/<branch>``: the commit history.
    Records every request as (method, path, authorization)."""

    def __init__(self, repos: dict[str, dict], commits: dict[str, list[str]] | None = None):
        self.repos, self.commits, self.seen = repos, commits or {}, []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body, headers=()):
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                path = urlsplit(self.path).path
                auth = self.headers.get("authorization")
                outer.seen.append(("GET", path, auth))
                code, body, headers = outer.answer(path, auth)
                self._send(code, body, headers)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, auth: str | None):
        parts = path.strip("/").split("/")
        if len(parts) < 4 or parts[0] != "api":
            return 404, {"error": "not found"}, []
        kind, repo, rest = parts[1], "/".join(parts[2:4]), parts[4:]
        r = self.repos.get(repo)
        if r is None or r.get("kind", "models") != kind:
            return 401, {"error": "Repository not found"}, [("X-Error-Code", "RepoNotFound"),
                                                           ("X-Error-Message", "Repository not found")]
        if rest[:1] == ["auth-check"]:
            if r.get("gated") and auth != f"Bearer {GOOD}":
                code = 401 if auth is None else 403
                msg = (f"Access to model {repo} is restricted. You must have access to it and be "
                       "authenticated to access it." if code == 401 else
                       f"Access to model {repo} is restricted and you are not in the authorized list.")
                return code, {"error": msg}, [("X-Error-Code", "GatedRepo"), ("X-Error-Message", msg)]
            return 200, {}, []
        if rest[:1] == ["commits"]:
            return 200, [{"id": c, "title": "t", "message": "m", "authors": [],
                          "date": "2024-06-01T00:00:00.000Z"} for c in self.commits.get(repo, [])], []
        revs = r.get("revisions", {"main": SHA, SHA: SHA})
        rev = "main" if not rest else rest[1] if rest[0] == "revision" else None
        from urllib.parse import unquote
        rev = unquote(rev) if rev else rev
        if rev not in revs:
            return 404, {"error": f"Invalid rev id: {rev}"}, [("X-Error-Code", "RevisionNotFound")]
        return 200, {"id": repo, "sha": revs[rev], "private": False, "gated": r.get("gated", False),
                     "siblings": []}, []

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        self._stop = threading.Timer(LIFETIME, self.server.shutdown)
        self._stop.daemon = True
        self._stop.start()
        return self

    def __exit__(self, *exc):
        self._stop.cancel()
        self.server.shutdown()
        self.server.server_close()


class RawListener:
    """A TCP listener on 127.0.0.1: ``mode='silent'`` accepts and never answers;
    ``mode='garbage'`` answers every connection with bytes that are neither TLS nor HTTP.
    ``mode='proxy'`` records the first request line (e.g. ``CONNECT host:443``) and answers
    502. Closes everything after :data:`LIFETIME` seconds or on exit."""

    def __init__(self, mode: str):
        self.mode, self.lines, self.conns = mode, [], []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()

    def _serve(self):
        end = time.monotonic() + LIFETIME
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)
            if self.mode == "garbage":
                try:
                    c.sendall(b"\x00\xffnot a hub\r\n\r\n" * 4)
                finally:
                    c.close()
            elif self.mode == "proxy":
                c.settimeout(2)
                try:
                    self.lines.append(c.recv(4096).split(b"\r\n")[0].decode())
                    c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass
                c.close()
        self.close()

    def close(self):
        self._stop.set()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(autouse=True)
def online(monkeypatch, tmp_path):
    """Online mode, no token, no proxy, short timeouts; a fresh hub client per test."""
    import huggingface_hub.constants as C

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)  # read once at import (the suite runs offline)
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(C, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(C, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"), raising=False)
    monkeypatch.setenv("STUDY_HUB_TIMEOUT", "2")
    monkeypatch.setenv("STUDY_HUB_DEADLINE", "20")
    hub.reset_session()
    yield
    hub.reset_session()


PAPER = {"data_source": "hub", "datasets": ["cotempqa", "marco", "babi"],
         "models": ["llama-3.2-1b", "qwen3-1.7b"]}
COT_FULL = "9f49aba" + "1" * 33
BABI_PARQUET = "ab" * 20


def paper_hub(gated=True, drop=()):
    repos = {
        "meta-llama/Llama-3.2-1B-Instruct": {"gated": gated},
        "Qwen/Qwen3-1.7B": {},
        "Warrieryes/CotempQA": {"kind": "datasets", "revisions": {"main": COT_FULL, COT_FULL: COT_FULL}},
        "microsoft/ms_marco": {"kind": "datasets", "revisions": {qa.marco.HUB["revision"]:
                                                                 qa.marco.HUB["revision"]}},
        "facebook/babi_qa": {"kind": "datasets",
                             "revisions": {"refs/convert/parquet": BABI_PARQUET,
                                           BABI_PARQUET: BABI_PARQUET}},
    }
    for d in drop:
        del repos[d]
    commits = {"Warrieryes/CotempQA": ["aee6778" + "0" * 33, COT_FULL]}
    return FakeHub(repos, commits)


# ------------------------------------------------------------------------------ the error
def test_one_error_class_under_every_old_name():
    assert data.HubUnavailable is hub.HubUnavailable is models.HubUnavailableError
    assert issubclass(hub.HubUnavailable, RuntimeError)


# ------------------------------------------------------------------------------ preflight
def test_preflight_paper_profile_passes_with_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    with paper_hub() as fh:
        monkeypatch.setenv("HF_ENDPOINT", fh.url)
        rows = data.preflight(PAPER)
    by = {r["name"]: r for r in rows}
    assert set(by) == {"cotempqa", "marco", "babi", "llama-3.2-1b", "qwen3-1.7b"}
    assert all(r["status"] == "ok" for r in rows)
    # short pins resolve to the full commit ids, which are what the data will record
    assert by["cotempqa"]["commit"] == COT_FULL and by["babi"]["commit"] == BABI_PARQUET
    assert by["marco"]["commit"] == qa.marco.HUB["revision"]
    assert by["llama-3.2-1b"]["gated"] and by["llama-3.2-1b"]["commit"] == SHA
    # the gated model was checked with the token
    assert ("GET", "/api/models/meta-llama/Llama-3.2-1B-Instruct/auth-check", f"Bearer {GOOD}") in fh.seen


def test_preflight_gated_without_token_names_the_way_out(monkeypatch):
    with paper_hub() as fh:
        monkeypatch.setenv("HF_ENDPOINT", fh.url)
        with pytest.raises(hub.HubUnavailable) as ei:
            data.preflight(PAPER)
    msg = str(ei.value)
    assert "1 of 5" in msg and "Llama-3.2-1B-Instruct is gated" in msg and "no Hugging Face token" in msg
    assert f"{fh.url}/meta-llama/Llama-3.2-1B-Instruct" in msg        # the licence page
    assert "hf auth login" in msg and "PROFILE=quick" in msg
    assert "Qwen" not in msg                                           # only the failing repo


def test_preflight_gated_with_token_but_no_licence(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", BAD)
    with paper_hub() as fh:
        monkeypatch.setenv("HF_ENDPOINT", fh.url)
        with pytest.raises(hub.HubUnavailable, match="token present has no access.*accept the licence"):
            data.preflight(PAPER)
    assert ("GET", "/api/models/meta-llama/Llama-3.2-1B-Instruct/auth-check", f"Bearer {BAD}") in fh.seen


def test_preflight_missing_repo_and_revision(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    with paper_hub(drop=["Qwen/Qwen3-1.7B"]) as fh:
        fh.repos["microsoft/ms_marco"]["revisions"] = {"main": SHA}   # the pinned commit is gone
        monkeypatch.setenv("HF_ENDPOINT", fh.url)
        with pytest.raises(hub.HubUnavailable) as ei:
            data.preflight(PAPER)
    msg = str(ei.value)
    assert "2 of 5" in msg
    assert "Qwen/Qwen3-1.7B was not found" in msg
    assert f"microsoft/ms_marco has no revision '{qa.marco.HUB['revision']}'" in msg


def test_preflight_commit_prefix_not_in_history(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    with paper_hub() as fh:
        fh.commits["Warrieryes/CotempQA"] = ["aee6778" + "0" * 33]
        monkeypatch.setenv("HF_ENDPOINT", fh.url)
        with pytest.raises(hub.HubUnavailable, match="no commit starting '9f49aba'"):
            data.preflight(dict(PAPER, datasets=["cotempqa"], models=[]))


def test_preflight_offline_fails_without_contacting_anything(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with paper_hub() as fh:
        monkeypatch.setenv("HF_ENDPOINT", fh.url)
        with pytest.raises(hub.HubUnavailable, match="HF_HUB_OFFLINE=1.*PROFILE=quick"):
            data.preflight(PAPER)
        assert fh.seen == []


def test_preflight_is_a_no_op_for_offline_profiles(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: would fail if used
    for models_ in (["smollm2-135m"], ["tiny"]):
        for src in ("synthetic", "local"):
            assert data.preflight({"data_source": src, "datasets": ["babi"], "models": models_}) == []
    assert data.needs_hub({"data_source": "synthetic", "models": ["qwen3-1.7b"]})


# ------------------------------------------------------------------------------ bad endpoints
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_silent_endpoint_fails_with_the_projects_message(monkeypatch, scheme):
    """Accepts the TCP connection, never answers (https: stuck in the TLS handshake)."""
    with RawListener("silent") as ls:
        monkeypatch.setenv("HF_ENDPOINT", f"{scheme}://127.0.0.1:{ls.port}")
        with pytest.raises(hub.HubUnavailable) as ei:
            data.preflight(PAPER)
    msg = str(ei.value)
    assert "cannot reach the Hugging Face hub" in msg and "Timeout" in msg and "PROFILE=quick" in msg
    assert "1 of" not in msg  # an unreachable hub stops at the first repo


def test_wall_clock_limit_when_the_library_would_wait_longer(monkeypatch):
    monkeypatch.setenv("STUDY_HUB_TIMEOUT", "30")
    monkeypatch.setenv("STUDY_HUB_DEADLINE", "1")
    hub.reset_session()
    with RawListener("silent") as ls:
        monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{ls.port}")
        with pytest.raises(hub.HubUnavailable, match="no answer .* within 1 s.*PROFILE=quick"):
            hub.check_repo("Qwen/Qwen3-1.7B")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_garbage_endpoint_fails_with_the_projects_message(monkeypatch, scheme):
    with RawListener("garbage") as ls:
        monkeypatch.setenv("HF_ENDPOINT", f"{scheme}://127.0.0.1:{ls.port}")
        with pytest.raises(hub.HubUnavailable, match="cannot reach the Hugging Face hub.*PROFILE=quick"):
            models.resolve("qwen3-1.7b")


def test_https_proxy_is_used(monkeypatch):
    """The hub name does not resolve here; only the proxy (on loopback) is contacted, with a
    CONNECT for it: the check goes through huggingface_hub's client, which honours
    HTTPS_PROXY, not through a raw socket of its own."""
    with RawListener("proxy") as px:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{px.port}")
        monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
        hub.reset_session()
        with pytest.raises(hub.HubUnavailable, match="cannot reach"):
            hub.check_repo("Qwen/Qwen3-1.7B")
    assert px.lines and px.lines[0].startswith("CONNECT hub.invalid:443")


def test_data_loaders_fail_fast_offline_and_unreachable(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset called"))
    with RawListener("garbage") as ls:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{ls.port}")
        with pytest.raises(data.HubUnavailable, match="cannot reach.*PROFILE=quick.*data_source='synthetic'"):
            qa.marco.load_hub()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for fn in (qa.cotempqa.load_hub, qa.marco.load_hub, qa.babi.load_hub):
        with pytest.raises(data.HubUnavailable, match="HF_HUB_OFFLINE=1.*synthetic.*DATA_DIR"):
            fn()


def test_model_resolve_checks_access(monkeypatch):
    with paper_hub() as fh:
        monkeypatch.setenv("HF_ENDPOINT", fh.url)
        assert models.resolve("qwen3-1.7b") == "Qwen/Qwen3-1.7B"
        with pytest.raises(models.HubUnavailableError, match="gated.*hf auth login"):
            models.resolve("llama-3.2-1b")
