"""The reasoning-teacher stage (helpers.teacher), without a network.

The API backend runs end to end against a small OpenAI-compatible server started here on
127.0.0.1 (canned, deterministic answers chosen by markers in the prompt: a 429, a response
slower than the client's timeout, a 500, a malformed body, an empty answer, a trace inside
the content). The local backend runs the tiny smoke model; the file backend reads valid and
malformed lines; the derived-set functions run on crafted frames.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from helpers import conditions
from helpers import teacher as TC
from helpers.scoring import parse_output
from helpers.templates import USER_TEMPLATE

PRICES = TC.Prices(input=0.55, output=2.19, input_cache_hit=0.14)
USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "prompt_cache_hit_tokens": 4,
         "completion_tokens_details": {"reasoning_tokens": 15}}
CLIENT_TIMEOUT = 0.5  # a canned answer takes milliseconds; the slow ones take 2.5x this


# --------------------------------------------------------------------------------------------
# the canned server
# --------------------------------------------------------------------------------------------

class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.hits: Counter = Counter()
        self.inflight = 0
        self.max_inflight = 0
        self.slow = 0
        self.max_slow = 0
        self.auth: list[str | None] = []


def _make_handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            req = json.loads(self.rfile.read(n))
            prompt = req["messages"][-1]["content"]
            with state.lock:
                state.hits[prompt] += 1
                hit = state.hits[prompt]
                state.inflight += 1
                state.max_inflight = max(state.max_inflight, state.inflight)
                state.auth.append(self.headers.get("Authorization"))
            try:
                self._answer(prompt, hit)
            finally:
                with state.lock:
                    state.inflight -= 1

        def _answer(self, prompt: str, hit: int) -> None:
            m = re.search(r"#(\w+)", prompt)
            mark = m.group(1) if m else ""
            if mark == "slowonce" and hit == 1 or mark == "slowalways":
                time.sleep(CLIENT_TIMEOUT * 2.5)  # bounded; the client has given up by then
            if mark == "slow":
                # below the client timeout: only to overlap requests. Counted while the handler
                # holds the request, before its answer is sent: a client slot is then certainly
                # busy (counting until after the send also counts the client's next request,
                # which may arrive before this handler returns)
                with state.lock:
                    state.slow += 1
                    state.max_slow = max(state.max_slow, state.slow)
                time.sleep(0.15)
                with state.lock:
                    state.slow -= 1
            if mark == "429once" and hit == 1 or mark == "429always":
                return self._send(429, b'{"error": "rate limited"}', {"Retry-After": "0"})
            if mark == "500once" and hit == 1 or mark == "500always":
                return self._send(500, b'{"error": "server error"}')
            if mark == "noauth":
                return self._send(401, b'{"error": "Authentication Fails"}')
            if mark == "badrequest":
                return self._send(400, b'{"error": "bad request"}')
            if mark == "malformed":
                return self._send(200, b'{"choices": [{"message": {"content": "trunc')
            ans = re.search(r"ans=(\w+)", prompt)
            answer = ans.group(1) if ans else "office"
            reasoning = f"The facts say where Mary went. Mary travelled to the {answer}."
            if mark == "empty":
                msg = {"role": "assistant", "content": "", "reasoning_content": ""}
            elif mark == "inline":  # a local server: the trace inside the content
                msg = {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"}
            elif mark == "noanswer":
                msg = {"role": "assistant", "content": "", "reasoning_content": reasoning}
            elif prompt.startswith("Summarize"):
                msg = {"role": "assistant", "content": "Mary went to the office."}
            elif "Explanation:" in prompt:
                msg = {"role": "assistant", "content": "Mary's last move was to the office.",
                       "reasoning_content": "I should explain."}
            else:
                msg = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
            body = {"id": "x", "model": "canned-r1", "choices": [{"index": 0, "message": msg,
                                                                  "finish_reason": "stop"}], "usage": USAGE}
            self._send(200, json.dumps(body).encode())

    return Handler


@pytest.fixture
def server(monkeypatch):
    for var in ("NO_PROXY", "no_proxy"):  # a proxy set in the environment must not catch 127.0.0.1
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    state = _State()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    stopper = threading.Timer(60, srv.shutdown)  # stops by itself even if a test hangs
    stopper.daemon = True
    stopper.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1", state
    finally:
        stopper.cancel()
        srv.shutdown()
        srv.server_close()


def _api(url, **kw):
    opts = dict(api_key_env="TEACHER_TEST_KEY", concurrency=4, timeout=CLIENT_TIMEOUT, max_retries=2,
                backoff_base=0.01, backoff_max=0.05, seed=0, prices=PRICES)
    opts.update(kw)
    return TC.OpenAIBackend(url, "canned-r1", **opts)


# --------------------------------------------------------------------------------------------
# crafted problems
# --------------------------------------------------------------------------------------------

BB_CONTEXT = ["Mary moved to the bathroom.", "John went to the hallway.", "Mary travelled to the office."]


def _babi(i: int, question: str = "Where is Mary?", answer: str = "office", category: str = "qa1") -> dict:
    return {"id": f"babi/qa1/test/{i}", "dataset": "babi", "split": "train", "question": question,
            "context": list(BB_CONTEXT), "answers": [answer], "category": category, "relevant": [2],
            "source": "synthetic", "synthetic": True, "flags": [], "meta": "{}"}


MARKS = ["", "429once", "slowonce", "500once", "429always", "slowalways", "500always", "badrequest",
         "malformed", "empty", "inline", "noanswer"]
EXPECTED = {"": "ok", "429once": "ok", "slowonce": "ok", "500once": "ok", "429always": "rate_limited",
            "slowalways": "timeout", "500always": "http_error", "badrequest": "http_error",
            "malformed": "malformed_body", "empty": "empty_response", "inline": "ok", "noanswer": "no_answer"}
# failures that are responses the server produced (cached) versus transport failures (not)
RESPONDED = {"", "429once", "slowonce", "500once", "empty", "inline", "noanswer"}


def _problems(marks=MARKS) -> pd.DataFrame:
    return pd.DataFrame([_babi(i, f"Where is Mary? #{m}" if m else "Where is Mary?") for i, m in enumerate(marks)])


def _prompt_of(row) -> str:
    return TC.teacher_prompt(row, "babi")


# --------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------

def test_prompts_are_the_studys():
    row = _babi(0)
    assert TC.teacher_prompt(row, "babi") == USER_TEMPLATE.format(context="\n".join(BB_CONTEXT),
                                                                  question="Where is Mary?")
    ct = {"context": ["A is a member of B from 2001 to 2003.", "A is a member of C in 2002."], "question": "Q?"}
    assert "\nA is a member of B from 2001 to 2003.\nA is a member of C in 2002.\nQuestion: Q?" in \
        TC.teacher_prompt(ct, "cotempqa")
    s = TC.summary_messages("T")[0]["content"]
    assert s == ("Summarize the following trace in a very concise and clear manner, highlighting key events "
                 "and outcomes in less than 100 words:\n\nT\n\nSummary:")
    msgs = TC.posthoc_messages(row, "babi", "my trace", "office")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == "<think>\nmy trace\n</think>\n\noffice"
    assert msgs[2]["content"].startswith("You have answered the question correctly.")
    assert msgs[2]["content"].endswith("easy to understand. \n Explanation: ")
    alt = TC.posthoc_messages(row, "babi", "my trace", "office", trace_field="reasoning_content")
    assert alt[1] == {"role": "assistant", "content": "office", "reasoning_content": "my trace"}
    assert alt[0] == msgs[0] and alt[2] == msgs[2]
    with pytest.raises(ValueError, match="trace_field"):
        TC.posthoc_messages(row, "babi", "t", "a", trace_field="thinking")
    with pytest.raises(ValueError, match="dataset"):
        TC.teacher_prompt(row, "gsm8k")


def test_interpret_splits_trace_and_answer():
    ok = TC.interpret({"reasoning": "r", "content": "<answer>office</answer>"}, "teacher", "babi")
    assert (ok["status"], ok["trace"], ok["answer"]) == ("ok", "r", "office")
    inline = TC.interpret({"content": "<think>\nr\n</think>\n\noffice"}, "teacher", "babi")
    assert (inline["status"], inline["trace"], inline["answer"]) == ("ok", "r", "office")
    opened = TC.interpret({"content": "r</think>office"}, "teacher", "babi")  # template opened the block
    assert (opened["trace"], opened["answer"]) == ("r", "office")
    assert TC.interpret({"content": "<think>cut off"}, "teacher", "babi")["status"] == "unclosed_think"
    assert TC.interpret({"content": "office"}, "teacher", "babi")["status"] == "empty_trace"
    assert TC.interpret({"reasoning": "r", "content": "  "}, "teacher", "babi")["status"] == "no_answer"
    assert TC.interpret({"reasoning": "", "content": ""}, "teacher", "babi")["status"] == "empty_response"
    assert TC.interpret({"error_class": "timeout"}, "teacher", "babi")["status"] == "timeout"
    assert TC.interpret(None, "teacher", "babi")["status"] == "missing"
    s = TC.interpret({"reasoning": "x", "content": "<think>y</think>A summary."}, "summary", "babi")
    assert (s["status"], s["text"]) == ("ok", "A summary.")
    assert TC.interpret({"content": "<think>y</think>"}, "summary", "babi")["status"] == "empty_text"


# --------------------------------------------------------------------------------------------
# the API backend against the canned server
# --------------------------------------------------------------------------------------------

def test_api_backend_end_to_end(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.setenv("TEACHER_TEST_KEY", "sk-test")
    probs = _problems()
    cache = tmp_path / "calls.jsonl"
    out, stats = TC.run_teacher(probs, "babi", _api(url), cache, failure_log=tmp_path / "failed.jsonl")

    by_mark = dict(zip(MARKS, out.to_dict("records")))
    assert {m: r["status"] for m, r in by_mark.items()} == EXPECTED
    assert by_mark[""]["trace"].startswith("The facts say") and by_mark[""]["answer"] == "office"
    assert by_mark["inline"]["trace"] == "The facts say where Mary went. Mary travelled to the office."
    assert all(a == "Bearer sk-test" for a in state.auth)
    hits = {m: state.hits[_prompt_of(r)] for m, r in zip(MARKS, probs.to_dict("records"))}
    assert hits["429once"] == hits["500once"] == hits["slowonce"] == 2  # retried once, then answered
    assert hits["429always"] == hits["500always"] == hits["slowalways"] == 3  # 1 + max_retries
    assert hits["badrequest"] == hits["malformed"] == 1  # not retried
    assert hits[""] == 1
    assert stats.status == Counter(EXPECTED.values())
    assert stats.requested == len(MARKS) and stats.called == len(MARKS) and stats.cached == 0
    # responses are cached; transport failures and malformed bodies are not
    assert stats.new_cached == len(RESPONDED)
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(lines) == len(RESPONDED)
    assert len((tmp_path / "failed.jsonl").read_text().splitlines()) == len(MARKS) - len(RESPONDED)
    # tokens and cost: every produced response carried USAGE
    n = len(RESPONDED)
    assert (stats.prompt_tokens, stats.completion_tokens, stats.reasoning_tokens) == (10 * n, 20 * n, 15 * n)
    assert stats.cost_usd == pytest.approx(n * (6 * 0.55 + 4 * 0.14 + 20 * 2.19) / 1e6)
    assert out["cost_usd"].notna().sum() == n

    # second run: cached prompts make no call, the failed ones are tried again
    before = Counter(state.hits)
    out2, stats2 = TC.run_teacher(probs, "babi", _api(url, max_retries=0), cache)
    new_hits = {m: state.hits[_prompt_of(r)] - before[_prompt_of(r)] for m, r in zip(MARKS, probs.to_dict("records"))}
    assert all(new_hits[m] == 0 for m in RESPONDED)
    assert all(new_hits[m] == 1 for m in set(MARKS) - RESPONDED)
    assert stats2.cached == len(RESPONDED) and stats2.called == len(MARKS) - len(RESPONDED)
    assert out2.loc[out2["cached"], "id"].tolist() == out.loc[out["status"].isin(["ok", "empty_response", "no_answer"]),
                                                                 "id"].tolist()
    assert stats2.cost_usd is None  # nothing new was paid for
    pd.testing.assert_frame_equal(out2.loc[out2["cached"], ["id", "status", "trace", "answer"]],
                                  out.loc[out2["cached"], ["id", "status", "trace", "answer"]])

    # refresh_failed: the cached empty / answerless responses are requested again
    before = Counter(state.hits)
    _, stats3 = TC.run_teacher(probs[probs["question"].str.contains("#empty|#noanswer|#inline")], "babi",
                               _api(url), cache, refresh_failed=True)
    assert stats3.called == 2 and stats3.cached == 1
    assert sum(state.hits.values()) - sum(before.values()) == 2


def test_api_resumes_after_interruption(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.setenv("TEACHER_TEST_KEY", "sk-test")
    probs = pd.DataFrame([_babi(i, f"Where is Mary? #slow v{i}") for i in range(10)])
    path = tmp_path / "calls.jsonl"

    class Interrupted(Exception):
        pass

    class BreakingCache(TC.CallCache):  # the process "dies" after 3 records were written
        def put(self, rec):
            if len(self) >= 3:
                raise Interrupted()
            super().put(rec)

    with pytest.raises(Interrupted):
        TC.run_teacher(probs, "babi", _api(url, concurrency=2), BreakingCache(path))
    with open(path, "a") as f:  # and it died in the middle of writing one more line
        f.write('{"key": "abc", "content": "tor')
    done_keys = {json.loads(line)["key"] for line in path.read_text().splitlines()[:3]}
    assert len(done_keys) == 3
    before = Counter(state.hits)
    out, stats = TC.run_teacher(probs, "babi", _api(url, concurrency=2), path)
    assert (out["status"] == "ok").all()
    assert stats.cached == 3 and stats.called == 7
    b = _api(url)
    for r in probs.to_dict("records"):
        p = _prompt_of(r)
        key = b.key(TC.Request(r["id"], "teacher", TC.teacher_messages(r, "babi")))
        assert state.hits[p] - before[p] == (0 if key in done_keys else 1)
    # the torn line was cut; the file is whole again
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert len(path.read_text().splitlines()) == 10
    # a third run is all cache
    before = Counter(state.hits)
    _, stats = TC.run_teacher(probs, "babi", _api(url), path)
    assert stats.cached == 10 and stats.called == 0 and state.hits == before


def test_api_refused_account_stops_the_run(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.setenv("TEACHER_TEST_KEY", "wrong")
    probs = _problems(["noauth"] + [""] * 3)
    with pytest.raises(TC.TeacherAPIError, match="401"):
        TC.run_teacher(probs, "babi", _api(url, concurrency=1), tmp_path / "c.jsonl")
    assert state.hits[_prompt_of(probs.iloc[0].to_dict())] == 1  # not retried


def test_api_concurrency_limit(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.setenv("TEACHER_TEST_KEY", "sk-test")
    probs = pd.DataFrame([_babi(i, f"Where is Mary? #slow n{i}") for i in range(9)])
    out, _ = TC.run_teacher(probs, "babi", _api(url, concurrency=3), None)
    assert (out["status"] == "ok").all()
    assert 2 <= state.max_slow <= 3


def test_api_key_and_cache_key(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.delenv("TEACHER_TEST_KEY", raising=False)
    probs = _problems([""])
    with pytest.raises(RuntimeError, match="TEACHER_TEST_KEY"):
        TC.run_teacher(probs, "babi", _api(url), tmp_path / "c.jsonl")
    assert sum(state.hits.values()) == 0
    monkeypatch.setenv("TEACHER_TEST_KEY", "k")
    TC.run_teacher(probs, "babi", _api(url), tmp_path / "c.jsonl")
    monkeypatch.delenv("TEACHER_TEST_KEY")
    _, stats = TC.run_teacher(probs, "babi", _api(url), tmp_path / "c.jsonl")  # all cached: no key needed
    assert stats.cached == 1
    # the key separates backends, models and request parameters
    req = TC.Request("a", "teacher", [{"role": "user", "content": "x"}])
    keys = {_api(url).key(req), _api(url, request={"temperature": 0}).key(req),
            TC.OpenAIBackend("http://other/v1", "canned-r1").key(req),
            TC.OpenAIBackend(url, "other-model").key(req)}
    assert len(keys) == 4
    assert _api(url).key(req) == _api(url, concurrency=1).key(req)  # not the transport settings


def test_summaries_and_posthoc_through_the_api(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.setenv("TEACHER_TEST_KEY", "k")
    tset = pd.DataFrame([{**_babi(i), "teacher_trace": f"trace {i}", "teacher_answer": "office"} for i in range(3)])
    summ = _api(url, request={"temperature": 0})
    s, st = TC.run_summaries(tset.rename(columns={"teacher_trace": "trace"}), summ, tmp_path / "s.jsonl",
                             dataset="babi")
    assert (s["status"] == "ok").all() and (s["text"] == "Mary went to the office.").all()
    p, _ = TC.run_posthoc(tset, "babi", _api(url), tmp_path / "p.jsonl")
    assert (p["text"] == "Mary's last move was to the office.").all()
    assert st.called == 3


def test_retry_delays_are_seeded_and_capped():
    b = TC.OpenAIBackend("http://x/v1", "m", backoff_base=1.0, backoff_max=10.0, jitter=0.5, seed=3)
    d = [b.delay("k", a) for a in range(6)]
    assert d == [b.delay("k", a) for a in range(6)]  # deterministic
    for a, x in enumerate(d):
        base = min(10.0, 2.0 ** a)
        assert base <= x <= base * 1.5
    assert d[0] < d[2] < d[3]
    assert TC.OpenAIBackend("http://x/v1", "m", seed=4).delay("k", 0) != TC.OpenAIBackend("http://x/v1", "m", seed=3).delay("k", 0)
    assert b.delay("k", 0, retry_after=4.0) == 4.0 and b.delay("k", 0, retry_after=99.0) == 10.0


def test_damaged_cache_is_an_error(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2"):
        TC.CallCache(p)


# --------------------------------------------------------------------------------------------
# the local backend (tiny model: noise -> counted failures)
# --------------------------------------------------------------------------------------------

def test_local_backend_tiny_model(tmp_path):
    probs = pd.DataFrame([_babi(i, f"Where is Mary {i}?") for i in range(3)])
    b = TC.LocalBackend("tiny", max_new_tokens=6, batch_size=2)
    out, stats = TC.run_teacher(probs, "babi", b, tmp_path / "local.jsonl")
    assert len(out) == 3 and stats.called == 3
    assert set(out["status"]) <= set(TC.CONTENT_FAILURES)  # noise: counted, not used
    assert sum(stats.status.values()) == 3
    assert (out["completion_tokens"] >= 1).all() and (out["completion_tokens"] <= 6).all()
    assert (out["prompt_tokens"] > 10).all()
    # the rerun is all cache: the model is not even loaded
    b2 = TC.LocalBackend("tiny", max_new_tokens=6, batch_size=2)
    out2, stats2 = TC.run_teacher(probs, "babi", b2, tmp_path / "local.jsonl")
    assert stats2.cached == 3 and stats2.called == 0 and b2._loaded is None
    assert out2["status"].tolist() == out["status"].tolist()
    # another token budget is another call
    assert TC.LocalBackend("tiny", max_new_tokens=7).key(TC.Request("a", "teacher", [{"role": "user", "content": "x"}])) \
        != b.key(TC.Request("a", "teacher", [{"role": "user", "content": "x"}]))


# --------------------------------------------------------------------------------------------
# the file backend
# --------------------------------------------------------------------------------------------

def test_file_backend_counts_bad_lines(tmp_path):
    p = tmp_path / "traces.jsonl"
    good = [{"id": f"babi/qa1/test/{i}", "trace": f"Mary travelled to the office. ({i})", "answer": "office",
             "summary": "Mary is in the office."} for i in range(3)]
    lines = [json.dumps(g) for g in good] + [
        "this is not json",
        json.dumps(["a", "list"]),
        json.dumps({"trace": "no id", "answer": "x"}),
        json.dumps({"id": "babi/qa1/test/3", "trace": 5, "answer": "x"}),  # trace not a string
        json.dumps({**good[0], "trace": "a second line for id 0"}),  # duplicate
        "",
        json.dumps({"id": "babi/qa1/test/4", "trace": "", "answer": "office"}),  # empty trace
    ]
    p.write_text("\n".join(lines) + "\n")
    b = TC.FileBackend(p)
    assert b.line_problems == Counter({"not_json": 1, "not_an_object": 1, "no_id": 1, "bad_field": 1,
                                       "duplicate_id": 1})
    probs = pd.DataFrame([_babi(i) for i in range(6)])
    out, stats = TC.run_teacher(probs, "babi", b, tmp_path / "unused.jsonl")
    assert out["status"].tolist() == ["ok", "ok", "ok", "malformed_line", "empty_trace", "missing"]
    assert out.loc[0, "trace"] == "Mary travelled to the office. (0)"  # the first line of a repeated id
    assert stats.status == Counter({"ok": 3, "malformed_line": 1, "empty_trace": 1, "missing": 1})
    assert not (tmp_path / "unused.jsonl").exists()  # the file backend is not cached
    s, _ = TC.run_summaries(out[out["status"] == "ok"], b, None, dataset="babi")
    assert s["text"].tolist() == ["Mary is in the office."] * 3
    ph, _ = TC.run_posthoc(pd.DataFrame([{**_babi(0), "teacher_trace": "t", "teacher_answer": "office"}]),
                           "babi", b, None)
    assert ph["status"].tolist() == ["missing"]  # the file has no post-hoc explanations
    with pytest.raises(FileNotFoundError):
        TC.FileBackend(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------------------------
# derived sets
# --------------------------------------------------------------------------------------------

CT_FACTS = ["Ann Lee is a member of the Green Party from 2001 to 2003.",
            "Ann Lee is a member of the Red Party from 2002 to 2004.",
            "Ann Lee is a member of the Blue Party in 2010."]


def _ct(i: int, category: str) -> dict:
    return {"id": f"cotempqa/{category}/{i}", "dataset": "cotempqa", "split": "train" if i % 3 else "test",
            "question": "While Ann Lee was a member of the Green Party, which political party did Ann Lee "
                        "belong to at the same time?", "context": list(CT_FACTS), "answers": ["Red Party"],
            "category": category, "relevant": [1], "source": "synthetic", "synthetic": True, "flags": [],
            "meta": json.dumps({"triple_element": "S1_R1_O2"})}


def test_score_teacher_and_teacher_set():
    probs = pd.DataFrame([_ct(i, "overlap") for i in range(5)])
    answers = pd.DataFrame([
        {"id": "cotempqa/overlap/0", "status": "ok", "trace": "Ann Lee is a member of the Red Party from 2002 to 2004.",
         "answer": "Red Party"},
        {"id": "cotempqa/overlap/1", "status": "ok", "trace": "t", "answer": "Blue Party"},  # wrong
        {"id": "cotempqa/overlap/2", "status": "ok", "trace": "t", "answer": "['Red Party']"},  # list form: right
        {"id": "cotempqa/overlap/3", "status": "no_answer", "trace": "t", "answer": None},
    ])
    scored = TC.score_teacher(probs, answers, "cotempqa")
    assert scored["teacher_em"].tolist() == [True, False, True, False, False]
    assert scored["teacher_status"].tolist() == ["ok", "ok", "ok", "no_answer", "missing"]
    tset = TC.teacher_set(scored)
    assert tset["id"].tolist() == ["cotempqa/overlap/0", "cotempqa/overlap/2"]
    acc = TC.teacher_accuracy(scored).set_index("category")
    assert acc.loc["all", "n"] == 5 and acc.loc["all", "answered"] == 3 and acc.loc["all", "em"] == pytest.approx(0.4)
    bb = TC.score_teacher(pd.DataFrame([_babi(0), _babi(1)]),
                          pd.DataFrame([{"id": "babi/qa1/test/0", "status": "ok", "trace": "t", "answer": "Office."},
                                        {"id": "babi/qa1/test/1", "status": "ok", "trace": "t", "answer": "kitchen"}]),
                          "babi")
    assert bb["teacher_em"].tolist() == [True, False]


def test_resplit_per_category_like_the_original():
    rows = [_ct(i, c) for c, n in (("equal", 11), ("overlap", 23), ("mix", 7)) for i in range(n)]
    df = pd.DataFrame(rows)
    out = TC.resplit(df)
    assert out["split_before"].tolist() == df["split"].tolist()
    for c, g in out.groupby("category"):
        cat = df[df["category"] == c].reset_index(drop=True)
        want = set(cat.sample(frac=0.2, random_state=42)["id"])  # the original's rule, per category file
        assert set(g.loc[g["split"] == "test", "id"]) == want
        assert (g["split"] == "test").sum() == round(len(g) * 0.2)
    assert out["id"].tolist() == df["id"].tolist()
    assert TC.resplit(df)["split"].tolist() == out["split"].tolist()
    assert TC.resplit(df, seed=7)["split"].tolist() != out["split"].tolist()


def test_derangement_and_swap():
    for n in (2, 3, 5, 17, 100):
        d = TC.derangement(n, seed=0)
        assert sorted(d) == list(range(n)) and all(d[i] != i for i in range(n))
        assert d == TC.derangement(n, seed=0)
    assert TC.derangement(50, seed=0) != TC.derangement(50, seed=1)
    assert TC.derangement(2, seed=5) == [1, 0]
    with pytest.raises(ValueError):
        TC.derangement(1, seed=0)
    tset = pd.DataFrame([{**_babi(i), "teacher_trace": f"trace {i}", "teacher_answer": f"a{i}"} for i in range(6)])
    sw = TC.swap_traces(tset, seed=0)
    assert (sw["swapped_from"] != sw["id"]).all()
    assert sorted(sw["teacher_trace"]) == sorted(tset["teacher_trace"])
    assert (sw["teacher_trace"] != tset["teacher_trace"]).all()
    assert sw["teacher_answer"].tolist() == tset["teacher_answer"].tolist()  # own answers stay
    for r in sw.to_dict("records"):
        assert r["teacher_trace"] == f"trace {r['swapped_from'].rsplit('/', 1)[1]}"


def test_teacher_conditions_targets():
    from helpers import traces

    tset = pd.DataFrame([{**_babi(i), "teacher_trace": f"Mary went there ({i}).", "teacher_answer": "office",
                          "teacher_summary": f"Summary {i}.", "teacher_posthoc": f"Because {i}."} for i in range(4)])
    for cond, col in (("teacher", "teacher_trace"), ("teacher_summary", "teacher_summary"),
                      ("teacher_posthoc", "teacher_posthoc")):
        ex = TC.build_teacher_condition(tset, "babi", cond)
        assert list(ex.columns) == traces.COLUMNS
        assert ex["assistant"].tolist() == [f"<think>{x}</think> <answer>office</answer>" for x in tset[col]]
        assert ex["user"].tolist() == [traces.build_test(tset, "babi")["user"][i] for i in range(4)]
        assert (ex["condition"] == cond).all()
        for a in ex["assistant"]:
            assert parse_output(a, "babi").answer == "office"
    sw = TC.build_teacher_condition(tset, "babi", "teacher_swapped", seed=0)
    assert (sw["source_id"] != sw["id"]).all()
    own = dict(zip(tset["id"], tset["teacher_trace"]))
    assert all(own[s] in a and own[i] not in a for i, s, a in zip(sw["id"], sw["source_id"], sw["assistant"]))
    with pytest.raises(ValueError, match="teacher_summary"):
        TC.build_teacher_condition(tset.drop(columns=["teacher_summary"]), "babi", "teacher_summary")
    bad = tset.copy()
    bad.loc[2, "teacher_trace"] = None
    with pytest.raises(ValueError, match="babi/qa1/test/2"):
        TC.build_teacher_condition(bad, "babi", "teacher")
    with pytest.raises(ValueError):
        TC.teacher_target("x", "")


def test_fact_citation():
    df = pd.DataFrame([
        {**_ct(0, "overlap"), "relevant": [1, 2],
         "teacher_trace": "First: Ann Lee is a member of the Red Party from 2002 to 2004. Then more."},
        {**_ct(1, "overlap"), "relevant": [1, 2],
         "teacher_trace": "Ann Lee is a member of the Red Party from 2002 to 2004. "
                          "ann lee is a member of the blue party in 2010."},
        {**_ct(2, "equal"), "relevant": [1], "teacher_trace": "She was in the Red Party (paraphrased)."},
        {**_ct(3, "equal"), "relevant": [], "teacher_trace": "anything"},
        {**_ct(4, "equal"), "relevant": [1], "teacher_trace": None},
    ])
    c = TC.fact_citation(df)
    assert c["n_cited"].tolist() == [1, 1, 0, 0, 0]
    assert c["share"].tolist()[:3] == [0.5, 0.5, 0.0] and c["share"].isna().tolist()[3:] == [True, True]
    assert TC.fact_citation(df, casefold=True)["n_cited"].tolist()[:2] == [1, 2]
    s = TC.citation_summary(c).set_index("category")
    assert s.loc["all", "n"] == 3 and s.loc["all", "mean_share"] == pytest.approx(1 / 3)
    assert s.loc["overlap", "all_cited"] == 0.0


def test_cost_limit_stops_new_calls(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.setenv("TEACHER_TEST_KEY", "k")
    probs = pd.DataFrame([_babi(i, f"Where is Mary? v{i}") for i in range(6)])
    per_call = PRICES.cost(TC._usage(USAGE))
    out, stats = TC.run_teacher(probs, "babi", _api(url, concurrency=1), tmp_path / "c.jsonl",
                                max_cost_usd=2.5 * per_call)
    assert out["status"].tolist() == ["ok"] * 3 + ["over_budget"] * 3
    assert stats.called == 3 and sum(state.hits.values()) == 3
    assert stats.cost_usd == pytest.approx(3 * per_call)
    out, stats = TC.run_teacher(probs, "babi", _api(url, concurrency=1), tmp_path / "c.jsonl")  # continues
    assert (out["status"] == "ok").all() and stats.cached == 3 and stats.called == 3
    with pytest.raises(ValueError, match="prices"):
        TC.run_teacher(probs, "babi", _api(url, prices=None), None, max_cost_usd=1.0)


def test_make_backend_from_profile(tmp_path):
    assert TC.make_backend(None) is None and TC.make_backend({}) is None
    b = TC.make_backend({"backend": "api", "base_url": "https://api.deepseek.com", "model": "deepseek-reasoner",
                         "api_key_env": "DEEPSEEK_API_KEY", "concurrency": 4, "request": {"max_tokens": 8192},
                         "prices": "deepseek-reasoner@2025-02"})
    assert isinstance(b, TC.OpenAIBackend) and b.concurrency == 4 and b.prices.output == 2.19
    assert b.params() == {"max_tokens": 8192}
    b = TC.make_backend({"backend": "api", "base_url": "http://localhost:11434/v1", "model": "qwen3:1.7b",
                         "api_key_env": None, "prices": {"input": 0.0, "output": 0.0}})
    assert b.prices.cost({"prompt_tokens": 10, "completion_tokens": 10}) == 0.0
    assert isinstance(TC.make_backend({"backend": "local", "model": "tiny", "max_new_tokens": 8}), TC.LocalBackend)
    with pytest.raises(ValueError, match="concurency"):
        TC.make_backend({"backend": "api", "base_url": "u", "model": "m", "concurency": 3})
    with pytest.raises(ValueError, match="unknown price table"):
        TC.make_backend({"backend": "api", "base_url": "u", "model": "m", "prices": "gpt-99"})
    with pytest.raises(ValueError, match="backend"):
        TC.make_backend({"backend": "openai", "model": "m"})
    with pytest.raises(FileNotFoundError):
        TC.make_backend({"backend": "file", "path": str(tmp_path / "none.jsonl")})
    (tmp_path / "babi_teacher.jsonl").write_text(json.dumps({"id": "a", "trace": "t", "answer": "x"}) + "\n")
    fb = TC.make_backend({"backend": "file", "path": str(tmp_path / "{dataset}_teacher.jsonl")}, dataset="babi")
    assert isinstance(fb, TC.FileBackend) and set(fb.lines) == {"a"}
    with pytest.raises(ValueError, match="dataset"):
        TC.make_backend({"backend": "file", "path": str(tmp_path / "{dataset}_teacher.jsonl")})


def test_synthetic_teacher_through_the_file_backend(tmp_path):
    """The smoke profile's path: a synthetic trace file -> file backend -> teacher set ->
    resplit -> every teacher condition."""
    probs = pd.DataFrame([_ct(i, c) for c in ("equal", "overlap") for i in range(10)])
    lines = TC.synthetic_teacher(probs, "cotempqa", seed=0, wrong_share=0.3)
    assert lines.equals(TC.synthetic_teacher(probs, "cotempqa", seed=0, wrong_share=0.3))
    path = TC.write_trace_file(lines, tmp_path / "teacher.jsonl")
    b = TC.FileBackend(path)
    out, stats = TC.run_teacher(probs, "cotempqa", b, None)
    assert stats.status == Counter({"ok": 20})
    scored = TC.score_teacher(probs, out, "cotempqa")
    wrong = lines["answer"] == TC.SYNTHETIC_WRONG_ANSWER
    assert 0 < wrong.sum() < 20
    assert scored["teacher_em"].tolist() == (~wrong).tolist()
    tset = TC.resplit(TC.teacher_set(scored))
    assert len(tset) == 20 - wrong.sum()
    assert TC.fact_citation(tset)["all_cited"].all()
    summ, _ = TC.run_summaries(tset.rename(columns={"teacher_trace": "trace"}), b, None, dataset="cotempqa")
    post, _ = TC.run_posthoc(tset, "cotempqa", b, None)
    tset = tset.assign(teacher_summary=summ["text"].tolist(), teacher_posthoc=post["text"].tolist())
    train = tset[tset["split"] == "train"]
    for cond in conditions.names("teacher"):
        ex = TC.build_teacher_condition(train, "cotempqa", cond, seed=0)
        assert len(ex) == len(train)
        assert all(parse_output(a, "cotempqa").answer == "Red Party" for a in ex["assistant"])
