"""Every contact with the Hugging Face hub goes through here: one error, bounded waits, the
and the checks. It imports nothing from the study, so every module may use it.

* :class:`HubUnavailable` is the one error (``helpers.data.HubUnavailable`` and
  ``helpers.models.HubUnavailableError`` are the same class). Its message always names the
  way out: ``hf auth login`` (or ``HF_TOKEN``), the licence at ``https://huggingface.co/<repo>``,
  or the offline profile ``PROFILE=quick``.
* Bounded waits. huggingface_hub 2.x builds one shared ``httpx2.Client`` with
  ``timeout=None``; calls that pass no timeout of their own (``auth_check``,
  ``list_repo_commits``, ...) could wait forever, e.g. in the TLS handshake with an endpoint
  that accepts the connection and never answers. :func:`bound_timeouts` installs a client
  factory that builds the library's own default client (same hooks, ``trust_env`` so
  ``HTTPS_PROXY`` / ``NO_PROXY`` are honoured) with a finite default timeout
  (``STUDY_HUB_TIMEOUT`` seconds, default 10: connect, TLS handshake, each read). Calls that
  pass their own timeout keep it. On top, every check here runs under a wall-clock limit
  (:data:`DEADLINE`, default 25 s), so nothing in a check can block past it.
* Checks: :func:`require_online` (HF_HUB_OFFLINE fails at once), :func:`check_repo` (one repo
  at one revision, with the token; gated and missing repos are told apart),
  :func:`pinned_revision` (a commit prefix or a branch -> the full 40-hex commit id).
* The preflight that runs before any work (every hub model and dataset a profile needs) is
  ``helpers.data.preflight``: it needs the datasets' pins and the models' table.
"""
from __future__ import annotations

import os
import re
import threading
from typing import Any, Callable, Mapping

from .config import offline

FULL_SHA = re.compile(r"[0-9a-f]{40}")
DEFAULT_ENDPOINT = "https://huggingface.co"


def _env_float(name: str, default: float) -> float:
    try:
        v = float(os.environ.get(name, ""))
        return v if v > 0 else default
    except ValueError:
        return default


def timeout() -> float:
    """Seconds for one hub request (connect, TLS handshake, each read): STUDY_HUB_TIMEOUT."""
    return _env_float("STUDY_HUB_TIMEOUT", 10.0)


def deadline() -> float:
    """Wall-clock seconds one check may take in all: STUDY_HUB_DEADLINE (default 25)."""
    return _env_float("STUDY_HUB_DEADLINE", 25.0)


class HubUnavailable(RuntimeError):
    """The hub cannot be used here: offline, unreachable, gated without access, or missing."""


# the ways out, appended to every message
LOGIN = "log in with `hf auth login` (or set HF_TOKEN; in Colab add it under Secrets)"
OFFLINE_WAY = ("or run offline with `make reproduce PROFILE=quick` (embedded SmolLM2 student, "
               "synthetic data)")


def endpoint() -> str:
    """The hub endpoint (HF_ENDPOINT, read now rather than at import)."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def repo_url(repo: str, repo_type: str = "model") -> str:
    return f"{endpoint()}/{'datasets/' if repo_type == 'dataset' else ''}{repo}"


# ------------------------------------------------------------------------------ timeouts
_installed = False
_lock = threading.Lock()


def bound_timeouts() -> None:
    """Give huggingface_hub's shared HTTP client a finite default timeout (idempotent).

    The factory wraps the library's own ``default_client_factory`` (its request hooks,
    offline guard, redirects, ``trust_env=True``: proxies from HTTP(S)_PROXY / NO_PROXY), so
    only the ``timeout=None`` default changes. Calls with a timeout of their own keep it
    (file downloads: HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT, 10 s by default)."""
    global _installed
    with _lock:
        if _installed:
            return
        import httpx2
        from huggingface_hub.utils import _http

        base = _http.default_client_factory

        def bounded_client():
            client = base()
            t = timeout()
            client.timeout = httpx2.Timeout(t, connect=t)
            return client

        _http.set_client_factory(bounded_client)
        _installed = True


def reset_session() -> None:
    """Drop the shared client so the next call builds a new one (after changing the proxy
    variables or STUDY_HUB_TIMEOUT)."""
    from huggingface_hub.utils import close_session

    close_session()


# ------------------------------------------------------------------------------ errors
def explain(e: BaseException, repo: str, repo_type: str = "model", what: str | None = None,
            revision: str | None = None) -> HubUnavailable:
    """The project's message for an exception raised by a hub call on ``repo``."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    what = what or repo
    url = repo_url(repo, repo_type)
    has_token = _token() is not None
    if isinstance(e, HubUnavailable):
        return e
    if isinstance(e, OfflineModeIsEnabled):
        return HubUnavailable(f"{what}: HF_HUB_OFFLINE=1, so the hub is not contacted; unset it "
                              f"to use the hub, {OFFLINE_WAY}.")
    if isinstance(e, GatedRepoError):
        if not has_token:
            why = f"{repo} is gated and no Hugging Face token is present here"
        else:
            why = f"{repo} is gated and the token present has no access to it"
        return HubUnavailable(f"{what}: {why}. The way out: accept the licence at {url} with "
                              f"your Hugging Face account, then {LOGIN}; {OFFLINE_WAY}.")
    if isinstance(e, RevisionNotFoundError):
        return HubUnavailable(f"{what}: {repo} has no revision {revision!r} on {endpoint()} "
                              f"(the study pins it; see {url}); {OFFLINE_WAY}.")
    if isinstance(e, RepositoryNotFoundError):
        who = "your token has no access to it" if has_token else "it needs a token (none is present)"
        return HubUnavailable(f"{what}: {repo} was not found on {endpoint()} ({url}), or it is "
                              f"private or gated and {who}: {LOGIN}; {OFFLINE_WAY}.")
    if isinstance(e, HfHubHTTPError):
        code = getattr(getattr(e, "response", None), "status_code", "?")
        if code in (401, 403):
            return HubUnavailable(f"{what}: the hub refused access to {repo} (HTTP {code}); "
                                  f"check your token: {LOGIN}; accept the licence at {url}, "
                                  f"{OFFLINE_WAY}.")
        return HubUnavailable(f"{what}: the hub answered HTTP {code} for {repo}; try again later, "
                              f"{OFFLINE_WAY}.")
    return HubUnavailable(
        f"{what}: cannot reach the Hugging Face hub at {endpoint()} ({type(e).__name__}: "
        f"{str(e)[:200] or 'no detail'}). Check the network or HTTPS_PROXY, {OFFLINE_WAY}.")


def _token() -> str | None:
    from huggingface_hub import get_token

    try:
        return get_token()
    except Exception:
        return None


def call(fn: Callable[[], Any], *, what: str, repo: str, repo_type: str = "model",
         revision: str | None = None, limit: float | None = None) -> Any:
    """``fn()`` under the bounded client and a wall-clock limit; any failure becomes a
    :class:`HubUnavailable` with the way out. The call runs in a daemon thread: past the
    limit it is abandoned (it ends by itself at its own timeout)."""
    require_online(what)
    bound_timeouts()
    limit = deadline() if limit is None else limit
    box: dict[str, Any] = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, name=f"hub-check {repo}", daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        raise HubUnavailable(
            f"{what}: no answer from the Hugging Face hub at {endpoint()} within {limit:.0f} s "
            f"(the endpoint accepts connections but does not answer, or the network is too "
            f"slow). Check the network or HTTPS_PROXY, {OFFLINE_WAY}.")
    if "error" in box:
        raise explain(box["error"], repo, repo_type, what, revision) from box["error"]
    return box.get("value")


# ------------------------------------------------------------------------------ checks
def require_online(what: str) -> None:
    """Fail at once (no network call) when HF_HUB_OFFLINE=1."""
    if offline():
        raise HubUnavailable(f"{what}: needs the Hugging Face hub, but HF_HUB_OFFLINE=1; unset "
                             f"it where the hub is reachable, {OFFLINE_WAY}.")


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


def check_repo(repo: str, repo_type: str = "model", revision: str | None = None,
               what: str | None = None, token: str | bool | None = None) -> str:
    """Check that ``repo`` is readable with the token present (gated repos: the licence is
    accepted) and that ``revision`` exists; return the full commit id it resolves to."""
    what = what or repo
    api = _api()
    t = timeout()
    call(lambda: api.auth_check(repo, repo_type=repo_type, token=token), what=what, repo=repo,
         repo_type=repo_type, revision=revision)
    info = call(lambda: api.repo_info(repo, repo_type=repo_type, revision=revision, token=token,
                                      timeout=t),
                what=what, repo=repo, repo_type=repo_type, revision=revision)
    sha = getattr(info, "sha", None)
    if not sha or not FULL_SHA.fullmatch(sha):
        raise HubUnavailable(f"{what}: the hub gave no commit id for {repo}@{revision}; "
                             f"{OFFLINE_WAY}.")
    if revision and FULL_SHA.fullmatch(revision) and sha != revision:
        raise HubUnavailable(f"{what}: {repo}@{revision} resolved to another commit ({sha})")
    return sha


def pinned_revision(repo: str, revision: str, repo_type: str = "dataset",
                    what: str | None = None) -> str:
    """``revision`` as a full 40-hex commit id: a full id passes unchanged (no network); a
    commit prefix (7-39 hex) is looked up in the repo's history, a branch or ref (e.g.
    ``refs/convert/parquet``) resolved to its current head, each within the wall-clock
    limit. The caller records the full id it gets (data stamp, row source)."""
    what = what or repo
    if FULL_SHA.fullmatch(revision):
        return revision
    if re.fullmatch(r"[0-9a-f]{7,39}", revision):
        # reachable and readable first: one request each, no retries (the history listing
        # below retries with back-off, which on a dead endpoint only the wall clock stops)
        check_repo(repo, repo_type, None, what)
        api = _api()

        def find():
            # the history is paginated; a prefix is in the first pages for a young repo
            for c in api.list_repo_commits(repo, repo_type=repo_type):
                if c.commit_id.startswith(revision):
                    return c.commit_id
            return None

        full = call(find, what=what, repo=repo, repo_type=repo_type, revision=revision)
        if not full:
            raise HubUnavailable(f"{what}: {repo} has no commit starting {revision!r}")
        return full
    return check_repo(repo, repo_type, revision, what)
