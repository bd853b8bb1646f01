"""Reasoning-teacher traces: one interface, three backends, a resumable call cache, and the
sets derived from the teacher's traces (the study's second comparison).

A *teacher* answers every problem with a reasoning trace and an answer. Three backends
produce the same records:

``OpenAIBackend``  any OpenAI-compatible ``/chat/completions`` endpoint (DeepSeek
                   ``deepseek-reasoner``, OpenAI, a local vLLM or Ollama server), over httpx:
                   a thread pool bounded by ``concurrency``, a request ``timeout``, retries
                   with exponential back-off and seeded jitter on 429 / 5xx / timeouts /
                   connection errors (``Retry-After`` honoured, capped), token and cost
                   accounting from ``usage``. The trace is ``message.reasoning_content``
                   (DeepSeek; ``message.reasoning`` on some servers) or the
                   ``<think>…</think>`` block at the start of ``content`` (local servers).
``LocalBackend``   a Hugging Face reasoning model (e.g. a DeepSeek-R1-Distill or Qwen3 with
                   thinking) through the project's own greedy generation
                   (:func:`helpers.engine.generation.generate_stream`), prompted with the model's own
                   chat template.
``FileBackend``    a JSON-lines file of traces made anywhere else: ``{"id", "trace",
                   "answer"}`` per line (optionally ``summary`` / ``posthoc``); malformed
                   lines are counted, never dropped silently.

The call cache
    Every call of a calling backend (API, local) is keyed by ``sha256(backend identity,
    model, messages, request parameters)`` and appended to a JSON-lines file the moment it
    completes (one line, flushed): an interrupted or rate-limited run is resumed by running
    it again, and nothing already paid for is requested twice. What is cached (a decision,
    see docs/teacher.md): every *response the server produced* (HTTP 200 with a
    well-formed body), including empty or answerless ones (they were paid for and are
    deterministic enough to keep; ``refresh_failed=True`` requests them again). What is
    *not* cached: transport failures after all retries (``rate_limited``, ``timeout``,
    ``connection_error``, ``http_error``) and ``malformed_body``; the next run retries them.
    A 429 after every retry is therefore retried on the next run, not recorded as final.
    The records keep the raw response parts (reasoning, content, usage); the trace / answer
    split and the failure class are computed from them on every read, so a changed parser
    never needs a new call.

Failure classes (``status``; ``ok`` when usable), counted per run, never used as data:
    transport: ``rate_limited``, ``timeout``, ``connection_error``, ``http_error``,
    ``malformed_body``, ``over_budget`` (not called: the run's cost limit was reached); file: ``missing`` (no line for the id), ``malformed_line`` (its line
    did not parse or lacked a field), ``duplicate_id`` (the id's later lines; the first is
    used); content (teacher requests): ``empty_response`` (neither trace nor content),
    ``unclosed_think`` (a ``<think>`` block never closed: cut by the token limit),
    ``empty_trace`` (no reasoning), ``no_answer`` (nothing after the reasoning);
    content (summary / post-hoc requests): ``empty_text``.

Prompts
    The teacher is shown the study's user prompt (:data:`helpers.templates.USER_TEMPLATE`)
    with the context facts newline-joined (as the original prompted DeepSeek-R1 for
    CoTempQA; the same for MS MARCO passages and bAbI lines), without a system message.
    Summaries use :data:`SUMMARY_TEMPLATE` (temperature 0 by default; any backend / model);
    post-hoc explanations show the teacher the problem, its own trace and answer as its
    earlier turn, then :data:`POSTHOC_PROMPT`. Both strings are the original study's.

Derived sets (pure functions over frames in the project's schema, docs/architecture.md)
    :func:`score_teacher` (teacher answers scored with :func:`helpers.scoring.answer_scores`),
    :func:`teacher_set` (the correctly answered problems), :func:`resplit` (per category
    80/20, ``random_state=42`` as the original), :func:`derangement` /
    :func:`swap_traces` (``teacher_swapped``: seeded, no fixed points),
    :func:`teacher_target` / :func:`build_teacher_condition` (``<think>{X}</think>
    <answer>{teacher answer}</answer>`` for ``teacher``, ``teacher_summary``,
    ``teacher_posthoc``, ``teacher_swapped``) and :func:`fact_citation` (how often a trace
    quotes the relevant facts verbatim: a rough interpretability proxy).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait, FIRST_EXCEPTION
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from . import conditions
from . import qa
from . import templates as T
from . import traces as TR
from .scoring import as_list, answer_scores, parse_output

# The original study's request texts (facts carried over byte for byte).
SUMMARY_TEMPLATE = ("Summarize the following trace in a very concise and clear manner, highlighting key "
                    "events and outcomes in less than 100 words:\n\n{trace}\n\nSummary:")
POSTHOC_PROMPT = ("You have answered the question correctly. Please provide a detailed explanation of the "
                  "reasoning behind your answer. The explanation should be clear, concise, and easy to "
                  "understand. \n Explanation: ")

TASKS = ("teacher", "summary", "posthoc")
# The teacher-family conditions (helpers.conditions, family "teacher") are built by the
# builders registered at the end of this module; the tset_* conditions (base conditions
# rebuilt on the teacher set) by helpers.traces.

STATUS_OK = "ok"
TRANSPORT_FAILURES = ("rate_limited", "timeout", "connection_error", "http_error", "malformed_body",
                      "over_budget")
FILE_FAILURES = ("missing", "malformed_line", "duplicate_id")
CONTENT_FAILURES = ("empty_response", "unclosed_think", "empty_trace", "no_answer", "empty_text")
FAILURE_CLASSES = TRANSPORT_FAILURES + FILE_FAILURES + CONTENT_FAILURES

RESPLIT_SEED = 42      # the original: sample(frac=0.2, random_state=42) per category
RESPLIT_TEST_FRAC = 0.2


# --------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------

def teacher_prompt(row: Mapping[str, Any], dataset: str) -> str:
    """The user message the teacher answers: the study's prompt with the context facts
    newline-joined (one fact / passage / story line per line)."""
    qa.get(dataset)  # an unknown dataset is an error naming the known ones
    context = [str(c) for c in as_list(row["context"])]
    return T.USER_TEMPLATE.format(context="\n".join(context), question=str(row["question"]))


def teacher_messages(row: Mapping[str, Any], dataset: str, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": teacher_prompt(row, dataset)}]


def summary_messages(trace: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": SUMMARY_TEMPLATE.format(trace=trace)}]


def teacher_turn(trace: str, answer: str) -> str:
    """The teacher's own earlier turn as shown back to it (post-hoc request): the trace in a
    think block, then the answer."""
    return f"{T.THINK_OPEN}\n{trace}\n{T.THINK_CLOSE}\n\n{answer}"


TRACE_FIELDS = ("content", "reasoning_content")


def posthoc_messages(row: Mapping[str, Any], dataset: str, trace: str, answer: str,
                     system: str | None = None, trace_field: str = "content") -> list[dict[str, str]]:
    """The post-hoc request: the problem, the teacher's own turn, the explanation request.

    ``trace_field``: where the teacher's earlier trace travels. ``content`` (default): inside
    the turn's text as a think block (:func:`teacher_turn`); the R1-era DeepSeek API returned
    HTTP 400 for ``reasoning_content`` in input messages, and local servers render content.
    ``reasoning_content``: the trace in that field, the answer as the content (newer DeepSeek
    thinking-mode APIs require the field on assistant turns; Qwen3's chat template reads it)."""
    if trace_field not in TRACE_FIELDS:
        raise ValueError(f"trace_field must be one of {TRACE_FIELDS}, got {trace_field!r}")
    turn = ({"role": "assistant", "content": teacher_turn(trace, answer)} if trace_field == "content"
            else {"role": "assistant", "content": answer, "reasoning_content": trace})
    return teacher_messages(row, dataset, system) + [turn, {"role": "user", "content": POSTHOC_PROMPT}]


# --------------------------------------------------------------------------------------------
# splitting a response into trace and answer
# --------------------------------------------------------------------------------------------

def split_think(content: str) -> tuple[str | None, str, bool]:
    """``(think text or None, rest, unclosed)`` of a content string: the think block at its
    start (``<think>…</think>``; or text up to ``</think>`` when the prompt already opened
    the block, as R1-Distill templates do), the text after it, and whether a ``<think>`` was
    opened and never closed."""
    content = "" if content is None else str(content)
    o = content.find(T.THINK_OPEN)
    c = content.find(T.THINK_CLOSE, o + len(T.THINK_OPEN) if o >= 0 else 0)
    if c >= 0 and (o < 0 or o < c):
        start = o + len(T.THINK_OPEN) if o >= 0 else 0
        return content[start:c], content[c + len(T.THINK_CLOSE):], False
    if o >= 0:
        return None, "", True
    return None, content, False


def interpret(rec: Mapping[str, Any] | None, task: str, dataset: str, *,
              answer_rule: str = "strict") -> dict[str, Any]:
    """What a raw call record means for ``task``: ``status`` (``ok`` or a failure class),
    and ``trace`` / ``answer`` (teacher) or ``text`` (summary, posthoc).

    The answer is extracted from the text after the reasoning with the project's answer
    extraction (:func:`helpers.scoring.parse_output`, ``answer_rule``): the inside of an
    ``<answer>`` tag when there is one, else the whole text (a new turn the model started by
    itself and a leading role word cut)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if rec is None:
        return {"status": "missing", "trace": None, "answer": None, "text": None}
    if rec.get("error_class"):
        return {"status": rec["error_class"], "trace": None, "answer": None, "text": None}
    reasoning = rec.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, str) else ""
    content = rec.get("content")
    content = content if isinstance(content, str) else ""
    think, rest, unclosed = split_think(content)
    if task != "teacher":
        text = rest.strip()
        return {"status": STATUS_OK if text else "empty_text", "trace": None, "answer": None,
                "text": text or None}
    if not reasoning.strip() and think is not None:
        reasoning = think
    trace = reasoning.strip()
    answer = parse_output(rest, dataset, answer_rule=answer_rule).answer.strip() if rest.strip() else ""
    if not trace and not content.strip():
        status = "empty_response"
    elif unclosed and not trace:
        status = "unclosed_think"
    elif not trace:
        status = "empty_trace"
    elif not answer:
        status = "no_answer"
    else:
        status = STATUS_OK
    return {"status": status, "trace": trace or None, "answer": answer or None, "text": None}


# --------------------------------------------------------------------------------------------
# the call cache
# --------------------------------------------------------------------------------------------

def call_key(backend_id: str, model: str, messages: Sequence[Mapping[str, str]],
             params: Mapping[str, Any] | None = None) -> str:
    """The cache key of one call: backend identity, model, the messages, and the request
    parameters that change the response (sampling, token limits)."""
    blob = json.dumps({"backend": backend_id, "model": model, "messages": [dict(m) for m in messages],
                       "params": dict(params or {})}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class CallCache:
    """Completed calls in a JSON-lines file (key -> record), appended and flushed as each
    call completes; safe to share between threads. A torn last line (the process died while
    writing it) is ignored and its call made again; any other unreadable line is an error
    naming the line (the cache is never silently trimmed). ``path=None``: in memory only."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # torn tail: drop it, so appends start on a new line
            data = data[: data.rfind(b"\n") + 1]
            self.path.write_bytes(data)
        for n, line in enumerate(data.decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}:{n}: not a JSON record ({e}); the cache is damaged "
                                 "(move it away to start afresh)") from e
            if not isinstance(rec, dict) or "key" not in rec:
                raise ValueError(f"{self.path}:{n}: a cache record needs a 'key'")
            self.records[rec["key"]] = rec  # a later record of a key (a refresh) wins

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def put(self, rec: Mapping[str, Any]) -> None:
        rec = dict(rec)
        with self._lock:
            self.records[rec["key"]] = rec
            if self.path is not None:
                with open(self.path, "a") as f:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    f.flush()


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------

@dataclass
class Request:
    """One call: the problem id, the task (teacher / summary / posthoc), the chat messages."""

    id: str
    task: str
    messages: list[dict[str, str]]


@dataclass
class Prices:
    """USD per million tokens. ``input_cache_hit``: the price of prompt tokens the provider
    served from its prompt cache (DeepSeek ``prompt_cache_hit_tokens``, OpenAI
    ``prompt_tokens_details.cached_tokens``); None = the plain input price. Reasoning tokens
    are part of ``completion_tokens`` and billed at the output price (DeepSeek, OpenAI)."""

    input: float
    output: float
    input_cache_hit: float | None = None
    source: str = ""

    def cost(self, usage: Mapping[str, int]) -> float:
        hit = int(usage.get("prompt_cache_hit_tokens") or 0)
        miss = int(usage.get("prompt_tokens") or 0) - hit
        hit_price = self.input if self.input_cache_hit is None else self.input_cache_hit
        return (miss * self.input + hit * hit_price + int(usage.get("completion_tokens") or 0) * self.output) / 1e6


# Prices as documented by their providers on the dates given; pass your own (prices change).
PRICES = {
    # api-docs.deepseek.com/quick_start/pricing-details-usd, the R1 page of Feb 2025
    # (deepseek-reasoner = DeepSeek-R1, as the original study used it)
    "deepseek-reasoner@2025-02": Prices(0.55, 2.19, 0.14, "api-docs.deepseek.com pricing page, Feb 2025"),
    # the same alias after DeepSeek's 2025-09 price change (V3.2), as recorded in Roo-Code's
    # provider table "Updated Dec 9, 2025"; check the provider's page before a run
    "deepseek-reasoner@2025-12": Prices(0.28, 0.42, 0.028, "DeepSeek pricing via Roo-Code table, Dec 2025"),
    # openai.com/api/pricing as quoted by third-party tables (2024-07 to 2026-05)
    "gpt-4o-mini": Prices(0.15, 0.60, 0.075, "openai.com/api/pricing as quoted 2024-2026"),
}


class Backend:
    """One way to answer :class:`Request` s. ``identity`` and ``params`` enter the cache key;
    ``cacheable``: whether its answers go through the call cache (the file backend's do not:
    they are read from a file already)."""

    name = "backend"
    cacheable = True

    model: str = ""

    @property
    def identity(self) -> str:
        return self.name

    def params(self) -> dict[str, Any]:
        return {}

    def key(self, req: Request) -> str:
        return call_key(self.identity, self.model, req.messages, self.params())

    def run(self, reqs: Sequence[Request], done: Callable[[int, dict[str, Any]], None],
            stop: Callable[[], bool] | None = None) -> None:
        """Answer ``reqs``, calling ``done(i, record)`` as each completes (any thread).
        ``stop()``: checked before each paid call; True answers the call ``over_budget``."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "identity": self.identity, "model": self.model, "params": self.params()}


class TeacherAPIError(RuntimeError):
    """The endpoint refused the account (401 / 402 / 403: bad key, no balance, no access):
    every further call would fail the same way, so the run stops (answers already received
    stay in the cache)."""


FATAL_STATUS = (401, 402, 403)


class _Retryable(Exception):
    def __init__(self, cls: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.cls, self.detail, self.retry_after = cls, detail, retry_after


def _usage(raw: Any) -> dict[str, int]:
    """Token counts from an OpenAI-style ``usage`` object (DeepSeek / OpenAI / vLLM names)."""
    u = raw if isinstance(raw, Mapping) else {}

    def num(v: Any) -> int:
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0

    details = u.get("completion_tokens_details") if isinstance(u.get("completion_tokens_details"), Mapping) else {}
    pdetails = u.get("prompt_tokens_details") if isinstance(u.get("prompt_tokens_details"), Mapping) else {}
    hit = num(u.get("prompt_cache_hit_tokens")) or num(pdetails.get("cached_tokens"))
    return {"prompt_tokens": num(u.get("prompt_tokens")), "completion_tokens": num(u.get("completion_tokens")),
            "reasoning_tokens": num(details.get("reasoning_tokens")), "prompt_cache_hit_tokens": hit}


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat-completions endpoint.

    ``base_url``: e.g. ``https://api.deepseek.com`` (DeepSeek), ``https://api.openai.com/v1``,
    ``http://localhost:8000/v1`` (vLLM), ``http://localhost:11434/v1`` (Ollama); the request
    goes to ``{base_url}/chat/completions``. ``api_key_env``: the environment variable that
    holds the key (read at the first real call, never stored; None for servers without
    keys). ``concurrency``: requests in flight at most. ``timeout``: seconds per request
    (reasoning models take minutes). ``max_retries``: extra attempts on 429 / 5xx / timeouts
    / connection errors, with delays ``min(backoff_max, backoff_base * 2**attempt)``
    stretched by a seeded jitter factor in ``[1, 1 + jitter]`` (``seed``, key, attempt), or
    the server's ``Retry-After`` (capped at ``backoff_max``). ``request``: extra body fields
    (``temperature``, ``max_tokens``, ...; part of the cache key; DeepSeek's reasoner ignores
    sampling settings, so the default sends none = the model's default sampling).
    ``prices``: :class:`Prices` for cost accounting (None: tokens only)."""

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "DEEPSEEK_API_KEY",
                 concurrency: int = 8, timeout: float = 600.0, max_retries: int = 6,
                 backoff_base: float = 2.0, backoff_max: float = 120.0, jitter: float = 0.5, seed: int = 0,
                 request: Mapping[str, Any] | None = None, prices: Prices | None = None,
                 headers: Mapping[str, str] | None = None, client: Any = None):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency, self.timeout, self.max_retries = int(concurrency), float(timeout), int(max_retries)
        self.backoff_base, self.backoff_max, self.jitter, self.seed = backoff_base, backoff_max, jitter, seed
        self.request = dict(request or {})
        self.prices = prices
        self.headers = dict(headers or {})
        self._client = client

    @property
    def identity(self) -> str:
        return f"openai:{self.base_url}"

    def params(self) -> dict[str, Any]:
        return dict(self.request)

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", **self.headers}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise RuntimeError(f"the API key is not set: export {self.api_key_env}=... (the teacher "
                                   f"backend {self.identity} reads it from there), or set api_key_env=None "
                                   "for a server that needs no key")
            h["Authorization"] = f"Bearer {key}"
        return h

    def delay(self, key: str, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based) of call ``key``."""
        if retry_after is not None:
            return min(self.backoff_max, max(0.0, retry_after))
        u = random.Random(f"{self.seed}:{key}:{attempt}").random()
        return min(self.backoff_max, self.backoff_base * 2 ** attempt) * (1.0 + self.jitter * u)

    def _once(self, client, headers: dict[str, str], req: Request) -> dict[str, Any]:
        import httpx

        body = {"model": self.model, "messages": req.messages, **self.request}
        try:
            r = client.post(f"{self.base_url}/chat/completions", json=body, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException as e:
            raise _Retryable("timeout", f"{type(e).__name__}: no response within {self.timeout}s") from e
        except httpx.TransportError as e:
            raise _Retryable("connection_error", f"{type(e).__name__}: {e}") from e
        if r.status_code == 429 or r.status_code >= 500:
            ra = r.headers.get("retry-after")
            try:
                ra_s = float(ra) if ra is not None else None
            except ValueError:
                ra_s = None
            cls = "rate_limited" if r.status_code == 429 else "http_error"
            raise _Retryable(cls, f"HTTP {r.status_code}: {r.text[:200]}", ra_s)
        if r.status_code in FATAL_STATUS:
            raise TeacherAPIError(f"{self.identity} answered HTTP {r.status_code} ({r.text[:200]}): check the key "
                                  f"in ${self.api_key_env}, the account's balance and access to {self.model!r}")
        if r.status_code != 200:
            return {"error_class": "http_error", "error": f"HTTP {r.status_code}: {r.text[:300]}",
                    "http_status": r.status_code}
        try:
            data = json.loads(r.text)
            choice = data["choices"][0]
            msg = choice["message"]
            if not isinstance(msg, Mapping):
                raise TypeError("message is not an object")
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            return {"error_class": "malformed_body", "error": f"{type(e).__name__}: {e}; body {r.text[:200]!r}",
                    "http_status": 200}
        reasoning = msg.get("reasoning_content")
        if not isinstance(reasoning, str) or not reasoning:
            reasoning = msg.get("reasoning") if isinstance(msg.get("reasoning"), str) else None
        content = msg.get("content") if isinstance(msg.get("content"), str) else None
        usage = _usage(data.get("usage"))
        return {"reasoning": reasoning, "content": content, "usage": usage,
                "finish_reason": choice.get("finish_reason"), "response_model": data.get("model"),
                "cost_usd": self.prices.cost(usage) if self.prices is not None else None}

    def call(self, client, headers: dict[str, str], req: Request) -> dict[str, Any]:
        """One request with its retries; a record (``error_class`` set on failure)."""
        key = self.key(req)
        t0 = time.perf_counter()
        attempt = 0
        while True:
            try:
                rec = self._once(client, headers, req)
                break
            except _Retryable as e:
                if attempt >= self.max_retries:
                    rec = {"error_class": e.cls, "error": e.detail}
                    break
                time.sleep(self.delay(key, attempt, e.retry_after))
                attempt += 1
        rec.update(attempts=attempt + 1, seconds=round(time.perf_counter() - t0, 3))
        return rec

    def run(self, reqs: Sequence[Request], done: Callable[[int, dict[str, Any]], None],
            stop: Callable[[], bool] | None = None) -> None:
        import httpx

        if not reqs:
            return
        headers = self._headers()
        client = self._client or httpx.Client(limits=httpx.Limits(max_connections=self.concurrency))
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="teacher")

        def one(i: int) -> None:
            if stop is not None and stop():
                done(i, {"error_class": "over_budget", "error": "the run's cost limit was reached before this call",
                         "attempts": 0, "seconds": 0.0})
            else:
                done(i, self.call(client, headers, reqs[i]))

        try:
            futs = [pool.submit(one, i) for i in range(len(reqs))]
            finished, _ = wait(futs, return_when=FIRST_EXCEPTION)
            for f in finished:
                if f.exception() is not None:
                    raise f.exception()
        except BaseException:
            # interrupted (Ctrl-C), refused (TeacherAPIError) or a record could not be written:
            # queued calls are dropped, calls in flight finish and are cached (a second Ctrl-C
            # abandons them); the next run resumes from the cache
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
            if self._client is None:
                client.close()


class LocalBackend(Backend):
    """A Hugging Face reasoning model through the project's greedy generation.

    ``model``: a short name, local folder or hub id (:func:`helpers.models.resolve`; hub
    models need the network or the local cache). Prompts are rendered with the model's own
    chat template (``template_kwargs``, e.g. ``{"enable_thinking": True}`` for Qwen3);
    generation stops at ``eos_token`` (default: the first EOS of the model's generation
    config, else the tokenizer's). Greedy decoding (the project's generation; reasoning
    models recommend sampling, see docs/teacher.md). The model is loaded at the first
    call that is not cached."""

    name = "local"

    def __init__(self, model: str, *, max_new_tokens: int = 2048, batch_size: int = 8,
                 template_kwargs: Mapping[str, Any] | None = None, eos_token: str | None = None,
                 bf16: bool = True, device: str | None = None):
        self.model = model
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        self.template_kwargs = dict(template_kwargs or {})
        self.eos_token, self.bf16, self.device = eos_token, bf16, device
        self._loaded: tuple | None = None

    def params(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "template_kwargs": self.template_kwargs,
                "eos_token": self.eos_token, "decoding": "greedy"}

    def load(self):
        if self._loaded is None:
            from . import models

            tok = models.load_tokenizer(self.model, padding_side="left")
            if self.eos_token is not None:
                eos = tok.convert_tokens_to_ids(self.eos_token)
                if eos is None or eos == tok.unk_token_id:
                    raise ValueError(f"eos_token {self.eos_token!r} is not a token of {self.model}")
            else:
                eos = self._model_eos(models.resolve(self.model))
                eos = tok.eos_token_id if eos is None else eos
            # load_model aligns the model's generation config with the project's tokenizer
            # (the family's end-of-turn); the teacher stops at its own EOS instead (above)
            model = models.load_model(self.model, method="full", device=self.device, tokenizer=tok)
            self._loaded = (model, tok, int(eos))
        return self._loaded

    @staticmethod
    def _model_eos(path: str) -> int | None:
        """The first EOS id of the model's own ``generation_config.json`` (None without one)."""
        from transformers import GenerationConfig

        try:
            gen = GenerationConfig.from_pretrained(path).eos_token_id
        except OSError:
            return None
        gen = gen[0] if isinstance(gen, (list, tuple)) and gen else gen
        return None if gen is None else int(gen)

    def render(self, tok, messages: Sequence[Mapping[str, str]]) -> str:
        text = tok.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True,
                                       **self.template_kwargs)
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text

    def run(self, reqs: Sequence[Request], done: Callable[[int, dict[str, Any]], None],
            stop: Callable[[], bool] | None = None) -> None:
        from .engine.generation import generate_stream, low_precision

        if not reqs:
            return
        model, tok, eos = self.load()
        rows = [tok(self.render(tok, r.messages), add_special_tokens=False)["input_ids"] for r in reqs]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        gen_model = low_precision(model) if self.bf16 else model
        gen_model.eval()
        t0 = time.perf_counter()
        for j, res in generate_stream(gen_model, tok, [rows[i] for i in order], max_new_tokens=self.max_new_tokens,
                                      batch_size=self.batch_size, eos_token_id=eos):
            i = order[j]
            t1 = time.perf_counter()
            n_new = int(res["n_new_tokens"])
            done(i, {"reasoning": None, "content": res["prediction"],
                     "usage": {"prompt_tokens": len(rows[i]), "completion_tokens": n_new,
                               "reasoning_tokens": 0, "prompt_cache_hit_tokens": 0},
                     "finish_reason": "stop" if res["finished"] else "length", "cost_usd": None,
                     "attempts": 1, "seconds": round(t1 - t0, 4)})
            t0 = t1


class FileBackend(Backend):
    """Traces made elsewhere: a JSON-lines file, one object per problem with ``id``,
    ``trace``, ``answer`` (strings) and optionally ``summary`` / ``posthoc``. Lines that do
    not parse, are not objects or lack a string ``id`` / ``trace`` / ``answer`` are counted
    (``line_problems``; their id, when readable, answers ``malformed_line``); repeated ids
    are counted and the first line is used (``duplicate_id``); problems without a line are
    ``missing``."""

    name = "file"
    cacheable = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"teacher trace file not found: {self.path}")
        self.model = f"file:{self.path.name}"
        self.lines: dict[str, dict[str, Any]] = {}
        self.bad_ids: dict[str, str] = {}
        self.line_problems: Counter = Counter()
        self.problem_lines: list[tuple[int, str]] = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            why, rec = None, None
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                why = "not_json"
            if why is None and not isinstance(rec, dict):
                why = "not_an_object"
            if why is None:
                if not isinstance(rec.get("id"), str) or not rec["id"]:
                    why = "no_id"
                else:
                    bad = [k for k in ("trace", "answer") if not isinstance(rec.get(k), str)]
                    bad += [k for k in ("summary", "posthoc") if k in rec and not isinstance(rec[k], (str, type(None)))]
                    if bad:
                        why = "bad_field:" + ",".join(bad)
            if why is None and (rec["id"] in self.lines or rec["id"] in self.bad_ids):
                why = "duplicate_id"
            if why is not None:
                self.line_problems[why.split(":")[0]] += 1
                self.problem_lines.append((n, why))
                if isinstance(rec, dict) and isinstance(rec.get("id"), str) and why != "duplicate_id":
                    self.bad_ids.setdefault(rec["id"], "malformed_line")
                continue
            self.lines[rec["id"]] = rec

    def run(self, reqs: Sequence[Request], done: Callable[[int, dict[str, Any]], None],
            stop: Callable[[], bool] | None = None) -> None:
        for i, r in enumerate(reqs):
            line = self.lines.get(r.id)
            if line is None:
                done(i, {"error_class": self.bad_ids.get(r.id, "missing"), "error": f"no usable line for {r.id!r}"})
                continue
            if r.task == "teacher":
                rec = {"reasoning": line["trace"], "content": line["answer"]}
            else:
                text = line.get(r.task)
                if text is None:
                    done(i, {"error_class": "missing", "error": f"{self.path.name}: no {r.task!r} for {r.id!r}"})
                    continue
                rec = {"reasoning": None, "content": text}
            done(i, {**rec, "usage": {}, "finish_reason": "file", "cost_usd": None, "attempts": 0, "seconds": 0.0})


# --------------------------------------------------------------------------------------------
# running requests through a backend and the cache
# --------------------------------------------------------------------------------------------

@dataclass
class RunStats:
    """What one run did: ``requested`` items, ``cached`` (answered from the cache),
    ``called`` (new calls made, failures included), ``new_cached`` (new records written),
    token totals and ``cost_usd`` of the new calls (None when the backend has no prices),
    and ``status`` counts of all items (``ok`` and the failure classes)."""

    requested: int = 0
    cached: int = 0
    called: int = 0
    new_cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    status: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "cached": self.cached, "called": self.called,
                "new_cached": self.new_cached, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "reasoning_tokens": self.reasoning_tokens,
                "cost_usd": self.cost_usd, "status": dict(sorted(self.status.items()))}


def run_requests(backend: Backend, reqs: Sequence[Request], cache: CallCache | str | Path | None = None, *,
                 dataset: str, refresh_failed: bool = False, answer_rule: str = "strict",
                 failure_log: str | Path | None = None,
                 max_cost_usd: float | None = None) -> tuple[pd.DataFrame, RunStats]:
    """Answer every request (cache first, then the backend) and interpret the answers.

    Returns one row per request, in order: ``id, task, status, trace, answer, text, cached,
    key, finish_reason, prompt_tokens, completion_tokens, reasoning_tokens, cost_usd,
    error`` (token and cost columns for cached rows too: their sums are what the whole
    stage cost so far) and the run's :class:`RunStats` (this run's new calls only). Backend calls that produced a response are
    appended to the cache as they complete; transport failures are not (the next run retries
    them). ``refresh_failed``: call again for cached responses whose interpretation is a
    failure (empty trace, no answer...). ``failure_log``: a JSON-lines file that receives
    every failed call (for diagnosis; never read back). ``max_cost_usd``: no new paid call
    starts once the new calls of this run cost that much (calls in flight finish; the rest
    are ``over_budget``, not cached: the next run continues; needs a backend with prices)."""
    if not isinstance(cache, CallCache):
        cache = CallCache(cache) if backend.cacheable else CallCache(None)
    ids = [r.id for r in reqs]
    if len(set(zip(ids, (r.task for r in reqs)))) != len(reqs):
        raise ValueError("request (id, task) pairs must be unique")
    stats = RunStats(requested=len(reqs))
    keys = [backend.key(r) for r in reqs]
    records: list[dict[str, Any] | None] = [None] * len(reqs)
    from_cache = [False] * len(reqs)
    todo: list[int] = []
    for i, (r, k) in enumerate(zip(reqs, keys)):
        rec = cache.get(k) if backend.cacheable else None
        if rec is not None and not (refresh_failed and
                                    interpret(rec, r.task, dataset, answer_rule=answer_rule)["status"] != STATUS_OK):
            records[i], from_cache[i] = rec, True
        else:
            todo.append(i)
    stats.cached = len(reqs) - len(todo)
    lock = threading.Lock()
    flog = Path(failure_log) if failure_log is not None else None
    if flog is not None:
        flog.parent.mkdir(parents=True, exist_ok=True)

    def done(j: int, rec: dict[str, Any]) -> None:
        i = todo[j]
        r = reqs[i]
        rec = {"key": keys[i], "id": r.id, "task": r.task, "backend": backend.identity, "model": backend.model,
               **rec}
        with lock:
            records[i] = rec
            stats.called += rec.get("error_class") != "over_budget"
            u = rec.get("usage") or {}
            stats.prompt_tokens += int(u.get("prompt_tokens") or 0)
            stats.completion_tokens += int(u.get("completion_tokens") or 0)
            stats.reasoning_tokens += int(u.get("reasoning_tokens") or 0)
            if rec.get("cost_usd") is not None:
                stats.cost_usd = (stats.cost_usd or 0.0) + float(rec["cost_usd"])
        if rec.get("error_class"):
            if flog is not None:
                with lock, open(flog, "a") as f:
                    f.write(json.dumps({**rec, "time": time.time()}, ensure_ascii=False) + "\n")
        elif backend.cacheable:
            cache.put({**rec, "messages": r.messages, "params": backend.params(), "time": time.time()})
            with lock:
                stats.new_cached += 1

    if max_cost_usd is not None and getattr(backend, "prices", None) is None and backend.name == "openai":
        raise ValueError("max_cost_usd needs the backend's prices (Prices) to count the cost")

    def stop() -> bool:
        with lock:
            return max_cost_usd is not None and (stats.cost_usd or 0.0) >= max_cost_usd

    backend.run([reqs[i] for i in todo], done, stop)
    rows = []
    for i, r in enumerate(reqs):
        rec = records[i]
        meaning = interpret(rec, r.task, dataset, answer_rule=answer_rule)
        stats.status[meaning["status"]] += 1
        u = (rec or {}).get("usage") or {}
        rows.append({"id": r.id, "task": r.task, "status": meaning["status"], "trace": meaning["trace"],
                     "answer": meaning["answer"], "text": meaning["text"], "cached": from_cache[i],
                     "key": keys[i], "finish_reason": (rec or {}).get("finish_reason"),
                     "prompt_tokens": int(u.get("prompt_tokens") or 0),
                     "completion_tokens": int(u.get("completion_tokens") or 0),
                     "reasoning_tokens": int(u.get("reasoning_tokens") or 0),
                     "cost_usd": (rec or {}).get("cost_usd"), "error": (rec or {}).get("error")})
    return pd.DataFrame(rows), stats


def run_teacher(problems: pd.DataFrame, dataset: str, backend: Backend, cache=None, *,
                system: str | None = None, **kw) -> tuple[pd.DataFrame, RunStats]:
    """The teacher's trace and answer for every problem (rows of the data schema)."""
    reqs = [Request(str(r["id"]), "teacher", teacher_messages(r, dataset, system))
            for r in problems.to_dict("records")]
    return run_requests(backend, reqs, cache, dataset=dataset, **kw)


def run_summaries(traces: pd.DataFrame, backend: Backend, cache=None, *, dataset: str,
                  **kw) -> tuple[pd.DataFrame, RunStats]:
    """A summary of every trace (``traces``: columns ``id``, ``trace``); the summariser may be
    another backend / model than the teacher (the original: GPT-4o-mini, temperature 0)."""
    reqs = [Request(str(r["id"]), "summary", summary_messages(str(r["trace"]))) for r in traces.to_dict("records")]
    return run_requests(backend, reqs, cache, dataset=dataset, **kw)


def run_posthoc(tset: pd.DataFrame, dataset: str, backend: Backend, cache=None, *,
                system: str | None = None, trace_field: str = "content", **kw) -> tuple[pd.DataFrame, RunStats]:
    """A post-hoc explanation for every problem of the teacher set (columns of the data
    schema plus ``teacher_trace``, ``teacher_answer``), asked of the teacher itself
    (``trace_field``: see :func:`posthoc_messages`)."""
    reqs = [Request(str(r["id"]), "posthoc",
                    posthoc_messages(r, dataset, str(r["teacher_trace"]), str(r["teacher_answer"]), system,
                                     trace_field))
            for r in tset.to_dict("records")]
    return run_requests(backend, reqs, cache, dataset=dataset, **kw)


def make_backend(spec: Mapping[str, Any] | None, dataset: str | None = None) -> Backend | None:
    """A backend from a profile mapping (docs/teacher.md), or None when ``spec`` is
    empty (the teacher comparison is off). ``backend``: ``api`` (keys ``base_url``,
    ``model``, ``api_key_env``, ``concurrency``, ``timeout``, ``max_retries``,
    ``backoff_base``, ``backoff_max``, ``seed``, ``request``, ``prices``: a name of
    :data:`PRICES` or ``{input, output, input_cache_hit}`` in USD per million tokens),
    ``local`` (``model``, ``max_new_tokens``, ``batch_size``, ``template_kwargs``,
    ``eos_token``) or ``file`` (``path``; ``{dataset}`` in it is replaced by ``dataset``).
    Unknown keys are an error (a typo must not silently fall back to a default)."""
    if not spec:
        return None
    spec = dict(spec)
    kind = spec.pop("backend", None)
    allowed = {"api": {"base_url", "model", "api_key_env", "concurrency", "timeout", "max_retries", "backoff_base",
                       "backoff_max", "jitter", "seed", "request", "prices", "headers"},
               "local": {"model", "max_new_tokens", "batch_size", "template_kwargs", "eos_token", "bf16", "device"},
               "file": {"path"}}
    if kind not in allowed:
        raise ValueError(f"teacher backend must be one of {sorted(allowed)}, got {kind!r}")
    unknown = set(spec) - allowed[kind]
    if unknown:
        raise ValueError(f"unknown keys for the {kind} teacher backend: {sorted(unknown)} "
                         f"(allowed: {sorted(allowed[kind])})")
    if kind == "file":
        path = str(spec["path"])
        if "{dataset}" in path:
            if dataset is None:
                raise ValueError(f"the trace file path {path!r} names {{dataset}}: pass the dataset")
            path = path.replace("{dataset}", dataset)
        return FileBackend(path)
    if "model" not in spec:
        raise ValueError(f"the {kind} teacher backend needs a model")
    if kind == "local":
        return LocalBackend(spec.pop("model"), **spec)
    if "base_url" not in spec:
        raise ValueError("the api teacher backend needs a base_url")
    prices = spec.pop("prices", None)
    if isinstance(prices, str):
        if prices not in PRICES:
            raise ValueError(f"unknown price table {prices!r}; known: {sorted(PRICES)} (or give a mapping)")
        prices = PRICES[prices]
    elif isinstance(prices, Mapping):
        prices = Prices(**prices)
    return OpenAIBackend(spec.pop("base_url"), spec.pop("model"), prices=prices, **spec)


def write_trace_file(rows: pd.DataFrame, path: str | Path) -> Path:
    """Teacher results (columns ``id``, ``trace``, ``answer``; optional ``summary``,
    ``posthoc``) as a trace file for :class:`FileBackend` (only rows with a trace and an
    answer; a run made once can be shared and rerun anywhere without calls)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w") as f:
        for r in rows.to_dict("records"):
            if not (isinstance(r.get("trace"), str) and r["trace"] and isinstance(r.get("answer"), str) and r["answer"]):
                continue
            line = {"id": str(r["id"]), "trace": r["trace"], "answer": r["answer"]}
            for k in ("summary", "posthoc"):
                if isinstance(r.get(k), str) and r[k]:
                    line[k] = r[k]
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    return path


SYNTHETIC_WRONG_ANSWER = "no answer found"


def synthetic_teacher(problems: pd.DataFrame, dataset: str, *, seed: int = 0,
                      wrong_share: float = 0.25) -> pd.DataFrame:
    """A stand-in teacher for the smoke profile and offline runs, NOT a model (label it as
    synthetic wherever shown): per problem a trace that restates the question and quotes the
    relevant facts, the gold answer, a one-line summary and a post-hoc sentence; a seeded
    ``wrong_share`` of the problems get a wrong answer (so the teacher set is a strict
    subset). Columns: ``id, trace, answer, summary, posthoc`` (:func:`write_trace_file`)."""
    if not 0 <= wrong_share < 1:
        raise ValueError("wrong_share must be in [0, 1)")
    rows = []
    for r in problems.to_dict("records"):
        ctx = [str(c) for c in as_list(r["context"])]
        facts = [ctx[int(i)] for i in as_list(r["relevant"])]
        gold = [str(a) for a in as_list(r["answers"])]
        wrong = TR._rng(seed, "synthetic_teacher", dataset, r["id"]).random() < wrong_share
        answer = SYNTHETIC_WRONG_ANSWER if wrong else ", ".join(gold)
        quoted = " ".join(facts) if facts else "No single fact settles it."
        rows.append({"id": str(r["id"]),
                     "trace": f"The question is: {r['question']} The context says: {quoted} "
                              f"So the answer is {answer}.",
                     "answer": answer, "summary": f"The relevant facts point to {answer}.",
                     "posthoc": f"The answer {answer} follows from the facts: {quoted}"})
    return pd.DataFrame(rows, columns=["id", "trace", "answer", "summary", "posthoc"])


# --------------------------------------------------------------------------------------------
# derived sets
# --------------------------------------------------------------------------------------------

def score_teacher(problems: pd.DataFrame, answers: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The problems with the teacher's result joined by id: ``teacher_status``,
    ``teacher_trace``, ``teacher_answer``, ``teacher_em``, ``teacher_f1`` (scored with the
    dataset's scorer, :func:`helpers.scoring.answer_scores`; False / 0 where the teacher
    failed; a problem without a teacher row is ``missing``)."""
    if problems["id"].duplicated().any():
        raise ValueError("problem ids repeat")
    if answers["id"].duplicated().any():
        raise ValueError("teacher rows repeat an id")
    by_id = {r["id"]: r for r in answers.to_dict("records")}
    out = []
    for row in problems.to_dict("records"):
        a = by_id.get(row["id"])
        status = a["status"] if a is not None else "missing"
        trace = a.get("trace") if a is not None else None
        ans = a.get("answer") if a is not None else None
        if status == STATUS_OK:
            s = answer_scores(ans, row, dataset)
            em, f1 = bool(s["em"]), float(s["f1"])
        else:
            em, f1 = False, 0.0
        out.append({**row, "teacher_status": status, "teacher_trace": trace, "teacher_answer": ans,
                    "teacher_em": em, "teacher_f1": f1})
    return pd.DataFrame(out, columns=list(problems.columns) + ["teacher_status", "teacher_trace", "teacher_answer",
                                                                "teacher_em", "teacher_f1"])


def teacher_accuracy(scored: pd.DataFrame) -> pd.DataFrame:
    """Teacher EM per category (and overall): n, answered (status ok), em (share of all)."""
    def one(g: pd.DataFrame) -> dict[str, Any]:
        return {"n": len(g), "answered": int((g["teacher_status"] == STATUS_OK).sum()),
                "em": float(g["teacher_em"].mean()) if len(g) else float("nan")}
    rows = [{"category": c, **one(g)} for c, g in scored.groupby("category", sort=True)]
    rows.append({"category": "all", **one(scored)})
    return pd.DataFrame(rows)


def teacher_set(scored: pd.DataFrame) -> pd.DataFrame:
    """The problems the teacher answered correctly (the original kept CoTempQA EM = 100)."""
    return scored[scored["teacher_em"].astype(bool) & (scored["teacher_status"] == STATUS_OK)].reset_index(drop=True)


def resplit(df: pd.DataFrame, *, test_frac: float = RESPLIT_TEST_FRAC, seed: int = RESPLIT_SEED) -> pd.DataFrame:
    """Split again per category: ``g.sample(frac=test_frac, random_state=seed)`` of each
    category is the test split, the rest train (the original's rule, ``random_state=42``).
    Rows keep their order; the previous split moves to ``split_before``."""
    if not 0 < test_frac < 1:
        raise ValueError("test_frac must be in (0, 1)")
    out = df.reset_index(drop=True).copy()
    if "split" in out.columns:
        out["split_before"] = out["split"]
    test_idx: set[int] = set()
    for _, g in out.groupby("category", sort=True):
        test_idx |= set(g.sample(frac=test_frac, random_state=seed).index.tolist())
    out["split"] = ["test" if i in test_idx else "train" for i in range(len(out))]
    return out


def derangement(n: int, seed: int, *, stream: str = "teacher_swapped") -> list[int]:
    """A seeded permutation ``d`` of ``range(n)`` with ``d[i] != i`` for every ``i``
    (uniform over derangements: :func:`helpers.traces.random_derangement`)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    return TR.random_derangement(TR._rng(seed, stream, n), n)


def swap_traces(tset: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``teacher_swapped``: every problem gets another problem's teacher trace (a seeded
    derangement; its own answer stays). Adds ``swapped_from`` (the donor's id) and
    ``swapped_identical`` (the donor's trace text equals the problem's own)."""
    out = tset.reset_index(drop=True).copy()
    d = derangement(len(out), seed)
    traces = out["teacher_trace"].tolist()
    ids = out["id"].tolist()
    out["teacher_trace"] = [traces[j] for j in d]
    out["swapped_from"] = [ids[j] for j in d]
    out["swapped_identical"] = [traces[j] == traces[i] for i, j in enumerate(d)]
    return out


def teacher_target(x: str, answer: str) -> str:
    """The assistant target of a teacher condition: ``<think>{X}</think> <answer>{A}</answer>``."""
    if not isinstance(x, str) or not x.strip():
        raise ValueError("a teacher target needs a non-empty think text")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError("a teacher target needs a non-empty answer")
    return f"{T.THINK_OPEN}{x}{T.THINK_CLOSE} {T.ANSWER_OPEN}{answer}{T.ANSWER_CLOSE}"


def build_teacher_condition(tset: pd.DataFrame, dataset: str, condition: str, seed: int = 0) -> pd.DataFrame:
    """The chat examples of a teacher condition (family ``teacher`` in
    :mod:`helpers.conditions`; its builder below) for the problems in ``tset``."""
    spec = conditions.get(condition)
    if spec.family != "teacher":
        raise ValueError(f"unknown teacher condition {condition!r}; expected one of {conditions.names('teacher')}")
    return conditions.builder(condition)(tset, dataset, condition, seed=seed)


def think_examples(tset: pd.DataFrame, dataset: str, condition: str, column: str, *, swap: bool = False,
                   seed: int = 0) -> pd.DataFrame:
    """Chat examples whose think text is ``tset[column]`` (the teacher set with
    ``teacher_trace``, ``teacher_answer`` and, for the summary / post-hoc conditions,
    ``teacher_summary`` / ``teacher_posthoc``); ``swap``: every problem takes another
    problem's text (:func:`swap_traces`). In the columns of :data:`helpers.traces.COLUMNS`
    (the user message is the student's, as in every other condition). A problem whose think
    text is missing is an error naming it."""
    if column not in tset.columns:
        raise ValueError(f"{condition} needs column {column!r} in the teacher set")
    src = swap_traces(tset, seed) if swap else tset.reset_index(drop=True)
    rows = []
    for r in src.to_dict("records"):
        x = r[column]
        if not isinstance(x, str) or not x.strip():
            raise ValueError(f"{dataset} id {r['id']!r}: no {column} for {condition}")
        note = "identical_trace" if swap and r["swapped_identical"] else ""
        rows.append({"id": r["id"], "dataset": dataset, "condition": condition,
                     "user": T.render_user(dataset, [str(c) for c in as_list(r["context"])], str(r["question"])),
                     "assistant": teacher_target(x, str(r["teacher_answer"])),
                     "trace_label": None, "trace_relevant": None, "trace_facts": None,
                     "gold_label": r["category"], "gold_relevant": [int(i) for i in as_list(r["relevant"])],
                     "answers": [str(a) for a in as_list(r["answers"])],
                     "corrupted_steps": ["swapped"] if swap else [], "note": note,
                     "source_id": r.get("swapped_from", r["id"]),
                     "flags": [str(f) for f in as_list(r.get("flags"))]})
    return pd.DataFrame(rows, columns=TR.COLUMNS)


@conditions.builds("teacher_trace")
def _build_teacher(tset: pd.DataFrame, dataset: str, condition: str, seed: int = 0) -> pd.DataFrame:
    """``teacher``: the teacher's own trace."""
    return think_examples(tset, dataset, condition, "teacher_trace", seed=seed)


@conditions.builds("teacher_summary")
def _build_teacher_summary(tset: pd.DataFrame, dataset: str, condition: str, seed: int = 0) -> pd.DataFrame:
    """``teacher_summary``: the summariser's summary of the teacher's trace."""
    return think_examples(tset, dataset, condition, "teacher_summary", seed=seed)


@conditions.builds("teacher_posthoc")
def _build_teacher_posthoc(tset: pd.DataFrame, dataset: str, condition: str, seed: int = 0) -> pd.DataFrame:
    """``teacher_posthoc``: the teacher's explanation written after the answer."""
    return think_examples(tset, dataset, condition, "teacher_posthoc", seed=seed)


@conditions.builds("teacher_swapped")
def _build_teacher_swapped(tset: pd.DataFrame, dataset: str, condition: str, seed: int = 0) -> pd.DataFrame:
    """``teacher_swapped``: another problem's teacher trace (a seeded derangement)."""
    return think_examples(tset, dataset, condition, "teacher_trace", swap=True, seed=seed)


def fact_citation(df: pd.DataFrame, trace_column: str = "teacher_trace", *, casefold: bool = False) -> pd.DataFrame:
    """How often a trace quotes the relevant facts: per problem, ``n_relevant``, ``n_cited``
    (relevant context facts found verbatim, as substrings, in the trace; ``casefold`` to
    ignore case), ``share`` (NaN without relevant facts or without a trace) and
    ``all_cited``. A rough interpretability proxy: a paraphrase counts as not cited."""
    rows = []
    for r in df.to_dict("records"):
        trace = r.get(trace_column)
        ctx = [str(c) for c in as_list(r["context"])]
        rel = [ctx[int(i)] for i in as_list(r["relevant"])]
        if not isinstance(trace, str) or not trace or not rel:
            rows.append({"id": r["id"], "category": r.get("category"), "n_relevant": len(rel), "n_cited": 0,
                         "share": float("nan"), "all_cited": pd.NA})
            continue
        hay = trace.casefold() if casefold else trace
        n = sum((f.casefold() if casefold else f) in hay for f in rel if f)
        rows.append({"id": r["id"], "category": r.get("category"), "n_relevant": len(rel), "n_cited": int(n),
                     "share": n / len(rel), "all_cited": bool(n == len(rel))})
    return pd.DataFrame(rows, columns=["id", "category", "n_relevant", "n_cited", "share", "all_cited"])


def citation_summary(cites: pd.DataFrame) -> pd.DataFrame:
    """:func:`fact_citation` per category and overall: checkable problems, mean share, share
    of problems citing every relevant fact."""
    ok = cites[cites["share"].notna()]

    def one(g: pd.DataFrame) -> dict[str, Any]:
        return {"n": len(g), "mean_share": float(g["share"].mean()) if len(g) else float("nan"),
                "all_cited": float(g["all_cited"].astype(bool).mean()) if len(g) else float("nan")}
    rows = [{"category": c, **one(g)} for c, g in ok.groupby("category", sort=True)]
    rows.append({"category": "all", **one(ok)})
    return pd.DataFrame(rows)
