"""Trace sets (helpers.traces): golden targets per condition, corruption exactly where it is
meant to be, seeded derangements, the written files and their stamp."""
import ast
import json
import random

import pandas as pd
import pytest

from helpers import conditions, config, decompose, paths, traces
from helpers import qa
from helpers import templates as T

# --------------------------------------------------------------------------------------
# hand-made problems in the data schema
# --------------------------------------------------------------------------------------
SCHEMA = ["id", "dataset", "split", "question", "context", "answers", "category", "relevant",
          "source", "synthetic", "flags", "meta"]


def row(dataset, pid, question, context, answers, category, relevant, split="train", flags=()):
    return {"id": pid, "dataset": dataset, "split": split, "question": question, "context": list(context),
            "answers": list(answers), "category": category, "relevant": list(relevant), "source": "test",
            "synthetic": True, "flags": list(flags), "meta": "{}"}


COTEMP = pd.DataFrame([
    row("cotempqa", "c/1", "While Ann Lee worked for Acme, which party was Ann Lee a member of?",
        ["Ann Lee works for Acme from 2001 to 2005.", "Ann Lee is a member of the Red Party from 2001 to 2005."],
        ["Red Party"], "equal", [1]),
    row("cotempqa", "c/2", "Which team did Bo Kim play for between 2010 and 2012?",
        ["Bo Kim plays for Lions from 2010 to 2012.", "Bo Kim attended Oak College in 2008."],
        ["Lions"], "during", [0]),
])
BABI = pd.DataFrame([
    row("babi", "b/1", "Where is Mary?", ["Mary went to the kitchen.", "John moved to the garden."],
        ["kitchen"], "single-supporting-fact", [0]),
    row("babi", "b/2", "Where is the milk?",
        ["Sandra took the milk.", "Sandra went to the office.", "Daniel went to the hallway."],
        ["office"], "two-supporting-facts", [0, 1]),
])
MARCO = pd.DataFrame([
    row("marco", "m/1", "what is a drennet",
        ["The word drennet names a folding garden chair in dialect.", "Skelby has 80 people."],
        ["a folding garden chair"], "DESCRIPTION", [0]),
    row("marco", "m/2", "how many people live in skelby",
        ["The word quib names a bell.", "About 83,626 people live in Skelby now."],
        ["83,626"], "NUMERIC", [1]),
])
LABELS = {"cotempqa": ["equal", "during"], "babi": ["single-supporting-fact", "two-supporting-facts"],
          "marco": ["DESCRIPTION", "NUMERIC"]}  # two labels: the other label is forced

C_CLS = "The temporal relation between the event in question and the event in context is: "
C_IR = "I need to use the following facts to answer the question: "
B_CLS = ("The category of the question represents what is being asked in that question. "
         "The category of the question asked is: ")
B_IR = "I need to use the following text to answer the question: "

GOLDEN = {
    ("cotempqa", "vanilla"): "['Red Party']",
    ("cotempqa", "correct"): f"<think>{C_CLS}equal.\n{C_IR}['Ann Lee is a member of the Red Party from 2001 to 2005.']"
                             "</think> <answer>['Red Party']</answer>",
    ("cotempqa", "incorrect"): f"<think>{C_CLS}during.\n{C_IR}['Ann Lee works for Acme from 2001 to 2005.']"
                               "</think> <answer>['Red Party']</answer>",
    ("cotempqa", "incorrect_class"): f"<think>{C_CLS}during.\n{C_IR}['Ann Lee is a member of the Red Party from "
                                     "2001 to 2005.']</think> <answer>['Red Party']</answer>",
    ("cotempqa", "incorrect_ir"): f"<think>{C_CLS}equal.\n{C_IR}['Ann Lee works for Acme from 2001 to 2005.']"
                                  "</think> <answer>['Red Party']</answer>",
    ("cotempqa", "shuffled"): f"<think>{C_CLS}during.\n{C_IR}['Bo Kim plays for Lions from 2010 to 2012.']"
                              "</think> <answer>['Red Party']</answer>",
    ("babi", "vanilla"): "kitchen",
    ("babi", "correct"): f"<think>{B_CLS}single-supporting-fact.\n{B_IR}['Mary went to the kitchen.']</think> "
                         "<answer>kitchen</answer>",
    ("babi", "incorrect"): f"<think>{B_CLS}two-supporting-facts.\n{B_IR}['John moved to the garden.']</think> "
                           "<answer>kitchen</answer>",
    ("babi", "incorrect_class"): f"<think>{B_CLS}two-supporting-facts.\n{B_IR}['Mary went to the kitchen.']"
                                 "</think> <answer>kitchen</answer>",
    ("babi", "incorrect_ir"): f"<think>{B_CLS}single-supporting-fact.\n{B_IR}['John moved to the garden.']"
                              "</think> <answer>kitchen</answer>",
    ("babi", "shuffled"): f"<think>{B_CLS}two-supporting-facts.\n{B_IR}['Sandra took the milk.', 'Sandra went to "
                          "the office.']</think> <answer>kitchen</answer>",
    ("marco", "vanilla"): "a folding garden chair",
    ("marco", "correct"): f"<think>{B_CLS}DESCRIPTION.\n{B_IR}['The word drennet names a folding garden chair in "
                          "dialect.']</think> <answer>a folding garden chair</answer>",
    ("marco", "incorrect"): f"<think>{B_CLS}NUMERIC.\n{B_IR}['Skelby has 80 people.']</think> "
                            "<answer>a folding garden chair</answer>",
    ("marco", "shuffled"): f"<think>{B_CLS}NUMERIC.\n{B_IR}['About 83,626 people live in Skelby now.']</think> "
                           "<answer>a folding garden chair</answer>",
}
USERS = {
    "cotempqa": "Answer the question based on the context:\n['Ann Lee works for Acme from 2001 to 2005.', "
                "'Ann Lee is a member of the Red Party from 2001 to 2005.']\nQuestion: While Ann Lee worked for "
                "Acme, which party was Ann Lee a member of?\nOnly return the answer.\n",
    "babi": "Answer the question based on the context:\nMary went to the kitchen.\nJohn moved to the garden.\n"
            "Question: Where is Mary?\nOnly return the answer.\n",
    "marco": "Answer the question based on the context:\n['The word drennet names a folding garden chair in "
             "dialect.', 'Skelby has 80 people.']\nQuestion: what is a drennet\nOnly return the answer.\n",
}
FRAMES = {"cotempqa": COTEMP, "babi": BABI, "marco": MARCO}


@pytest.mark.parametrize("dataset,condition", sorted(GOLDEN))
def test_golden_targets(dataset, condition):
    out = traces.build_condition(FRAMES[dataset], dataset, condition, seed=0, labels=LABELS[dataset])
    first = out.iloc[0]
    assert first["assistant"] == GOLDEN[(dataset, condition)]
    assert first["user"] == USERS[dataset]  # identical user message in every condition
    assert list(out.columns) == traces.COLUMNS


def test_conditions_written_here():
    assert conditions.names("base") == ("vanilla", "correct", "incorrect", "incorrect_class", "incorrect_ir",
                                        "shuffled")
    assert traces.CONDITIONS == conditions.names("base")  # the notebooks' name for that view
    assert set(conditions.names("base", has_trace=True)) == set(conditions.names("base")) - {"vanilla"}
    with pytest.raises(ValueError, match="krsl"):
        traces.build_condition(BABI, "babi", "krsl", 0)
    with pytest.raises(ValueError, match="teacher stage"):
        traces.build_condition(BABI, "babi", "teacher", 0)
    with pytest.raises(ValueError, match="unknown condition"):
        traces.build_condition(BABI, "babi", "no_such_condition", 0)


def test_vanilla_and_gold_fields():
    out = traces.build_condition(COTEMP, "cotempqa", "vanilla", 0)
    assert out["trace_label"].isna().all() and out["trace_relevant"].isna().all()
    assert out["gold_label"].tolist() == ["equal", "during"]
    assert out["gold_relevant"].tolist() == [[1], [0]]
    assert out["answers"].tolist() == [["Red Party"], ["Lions"]]


def test_messages_name_the_student():
    ex = traces.build_condition(BABI, "babi", "correct", 0).iloc[0]
    msgs = traces.messages(ex, "tiny")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[0]["content"] == T.system_prompt("Tiny")
    assert traces.messages(ex, "llama-3.2-1b")[0]["content"].startswith("You are Llama,")
    assert traces.messages(ex, "tiny", with_assistant=False) == msgs[:2]


# --------------------------------------------------------------------------------------
# random problems: corruption properties
# --------------------------------------------------------------------------------------
def random_problems(dataset, n, seed, share_traces=False):
    from helpers import decompose

    rnd = random.Random(seed)
    labels = list(decompose.labels(dataset, "paper11"))
    rows = []
    for k in range(n):
        m = rnd.randint(1, 7)
        ctx = [f"Fact {k}-{j}: person {rnd.randint(0, 999)} went to place {j}." for j in range(m)]
        rel = sorted(rnd.sample(range(m), rnd.randint(0, min(3, m))))
        cat = rnd.choice(labels)
        if share_traces and k % 3:  # many problems with one and the same trace
            ctx, rel, cat = ["Shared fact.", "Other fact."], [0], labels[0]
        rows.append(row(dataset, f"{dataset}/{k}", f"Question {k}?", ctx, [f"answer {k}", "alt"], cat, rel))
    return pd.DataFrame(rows)


def split_target(text, dataset):
    """(label, facts list, answer) parsed back from a trace target."""
    assert text.startswith(T.THINK_OPEN) and text.endswith(T.ANSWER_CLOSE)
    think, ans = text[len(T.THINK_OPEN):].split(T.THINK_CLOSE + " " + T.ANSWER_OPEN)
    c, r = think.split("\n")
    label = c[len(T.CLASSIFICATION[dataset].split("{label}")[0]):-1]
    facts = ast.literal_eval(r[len(T.RETRIEVAL[dataset].split("{facts}")[0]):])
    return label, facts, ans[:-len(T.ANSWER_CLOSE)]


@pytest.mark.parametrize("dataset", qa.DATASETS)
def test_incorrect_differs_exactly_in_corrupted_steps(dataset):
    df = random_problems(dataset, 60, seed=1)
    gold = traces.build_condition(df, dataset, "correct", seed=3)
    sets = {c: traces.build_condition(df, dataset, c, seed=3) for c in ("incorrect", "incorrect_class", "incorrect_ir")}
    for i, g in gold.iterrows():
        gl, gf, ga = split_target(g["assistant"], dataset)
        assert gl == g["gold_label"] and gf == [df.iloc[i]["context"][j] for j in g["gold_relevant"]]
        assert ga == T.render_answer(dataset, g["answers"])
        ctx = df.iloc[i]["context"]
        for cond, fr in sets.items():
            r = fr.iloc[i]
            label, facts, ans = split_target(r["assistant"], dataset)
            assert ans == ga, "the answer is never corrupted"
            assert r["user"] == g["user"]
            if "label" in conditions.get(cond).corrupts:
                assert label != gl and label in set(fr["gold_label"]) | set(traces.default_labels(dataset))
            else:
                assert label == gl
            if "ir" in conditions.get(cond).corrupts and r["note"] != "no_irrelevant_fact":
                assert not set(r["trace_relevant"]) & set(g["gold_relevant"]), "only non-relevant facts"
                want = max(1, len(g["gold_relevant"]))
                assert len(facts) == want or (r["note"] == "fewer_irrelevant_facts" and len(facts) < want)
                assert facts == [ctx[j] for j in r["trace_relevant"]] and facts != gf
                assert "ir" in r["corrupted_steps"]
            else:
                assert facts == gf
        # the combined condition corrupts each step exactly as the single-step ablations do
        inc, cls, ir = (sets[c].iloc[i] for c in ("incorrect", "incorrect_class", "incorrect_ir"))
        assert inc["trace_label"] == cls["trace_label"] and inc["trace_relevant"] == ir["trace_relevant"]


def test_no_irrelevant_fact_is_counted_not_hidden():
    df = pd.DataFrame([row("babi", "b/x", "Where is Mary?", ["Mary went to the kitchen."], ["kitchen"],
                           "single-supporting-fact", [0])] + BABI.to_dict("records"))
    out = traces.build_condition(df, "babi", "incorrect", 0)
    r = out.iloc[0]
    assert r["note"] == "no_irrelevant_fact" and r["corrupted_steps"] == ["label"]
    # b/2 has two gold lines and one other line: it cites the one there is
    assert traces.summary(out)["notes"] == {"no_irrelevant_fact": 1, "fewer_irrelevant_facts": 1}
    assert out.iloc[2]["trace_facts"] == ["Daniel went to the hallway."]


def test_corruption_is_seeded_and_row_local():
    df = random_problems("cotempqa", 40, seed=2)
    a = traces.build_condition(df, "cotempqa", "incorrect", seed=5)
    b = traces.build_condition(df.iloc[::-1].reset_index(drop=True), "cotempqa", "incorrect", seed=5)
    assert a.set_index("id")["assistant"].to_dict() == b.set_index("id")["assistant"].to_dict()
    c = traces.build_condition(df, "cotempqa", "incorrect", seed=6)
    assert (a["assistant"] != c["assistant"]).any()


def test_marco_prefers_passages_sharing_few_words():
    gold = "the word drennet names a folding garden chair in the old dialect of the north"
    near = "the word drennet names a folding garden chair in dialect, they say"  # >= 8 shared words
    far = "Skelby has 80 people."
    df = pd.DataFrame([row("marco", "m/a", "what is a drennet", [near, gold, far], ["a folding garden chair"],
                           "DESCRIPTION", [1])])
    out = traces.build_condition(df, "marco", "incorrect_ir", 0)
    assert out.iloc[0]["trace_facts"] == [far] and out.iloc[0]["note"] == ""


# --------------------------------------------------------------------------------------
# shuffled
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", qa.DATASETS)
def test_shuffled_never_keeps_its_own_trace(dataset):
    df = random_problems(dataset, 45, seed=4, share_traces=True)
    corr = traces.build_condition(df, dataset, "correct", seed=0).set_index("id")
    out = traces.build_condition(df, dataset, "shuffled", seed=0)
    assert (out["source_id"] != out["id"]).all()
    assert sorted(out["source_id"]) == sorted(out["id"]), "a permutation of the problems"
    for _, r in out.iterrows():
        label, facts, ans = split_target(r["assistant"], dataset)
        own_label, own_facts, own_ans = split_target(corr.loc[r["id"], "assistant"], dataset)
        donor_label, donor_facts, _ = split_target(corr.loc[r["source_id"], "assistant"], dataset)
        assert (label, facts) == (donor_label, donor_facts) and ans == own_ans
        if r["note"] != "identical_trace":
            assert (label, facts) != (own_label, own_facts)
    # 30 problems share one trace, 15 have their own: at best 15 of the 30 get a different one
    shared = sum(k % 3 != 0 for k in range(len(df)))
    assert (out["note"] == "identical_trace").sum() == shared - (len(df) - shared)


def test_shuffled_is_seeded():
    df = random_problems("babi", 30, seed=7)
    a = traces.build_condition(df, "babi", "shuffled", seed=1)["source_id"].tolist()
    assert a == traces.build_condition(df, "babi", "shuffled", seed=1)["source_id"].tolist()
    assert a != traces.build_condition(df, "babi", "shuffled", seed=2)["source_id"].tolist()
    with pytest.raises(ValueError, match="at least 2"):
        traces.build_condition(df.iloc[:1], "babi", "shuffled", seed=1)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
def test_malformed_rows_raise_with_their_id():
    bad = BABI.copy()
    bad.at[1, "relevant"] = [5]
    with pytest.raises(ValueError, match=r"b/2.*outside"):
        traces.build_condition(bad, "babi", "correct", 0)
    with pytest.raises(ValueError, match="repeated problem ids"):
        traces.build_condition(pd.concat([BABI, BABI]), "babi", "correct", 0)
    with pytest.raises(ValueError, match="lack columns"):
        traces.build_condition(BABI.drop(columns=["relevant"]), "babi", "correct", 0)
    odd = BABI.copy()
    odd.at[0, "category"] = "no-such-task"
    with pytest.raises(ValueError, match="not one of the dataset's labels"):
        traces.build_condition(odd, "babi", "incorrect", 0)


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
@pytest.fixture
def tmp_study(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    cfg = config.load_profile("smoke")
    cfg["conditions"] = ["vanilla", "correct", "incorrect", "shuffled", "krsl"]
    for ds, fr in FRAMES.items():
        d = paths.data_dir(cfg["profile"], ds)
        d.mkdir(parents=True)
        decompose.write_problems(cfg, ds, {"train": fr[SCHEMA], "test": fr[SCHEMA].assign(split="test")})
    return cfg


def test_prepare_traces_writes_files_and_skips_when_fresh(tmp_study):
    cfg = tmp_study
    res = traces.prepare_traces(cfg)
    for ds in FRAMES:
        e = res[ds]
        assert not e["skipped"]
        assert set(e["train"]) == {"vanilla", "correct", "incorrect", "shuffled"}, "krsl has no file of its own"
        for cond, p in e["train"].items():
            back = traces.load_condition(cfg["profile"], ds, cond)
            assert back["assistant"].tolist() == traces.build_condition(
                FRAMES[ds], ds, cond, cfg["trace_seed"], labels=json.loads(json.dumps(
                    config.read_json(e["dir"] / "stamp.json")["labels"])))["assistant"].tolist()
            lines = p.with_suffix(".jsonl").read_text().splitlines()
            assert len(lines) == len(FRAMES[ds]) and json.loads(lines[0])["id"] == FRAMES[ds]["id"][0]
        test = pd.read_parquet(e["test"])
        assert list(test.columns) == traces.TEST_COLUMNS and test["user"][0] == USERS[ds]
        assert config.is_fresh(e["dir"], cfg, traces.TRACE_KEYS, stage="traces",
                               inputs=traces.data_inputs(cfg, ds))
    mtime = res["babi"]["train"]["correct"].stat().st_mtime_ns
    again = traces.prepare_traces(cfg)
    assert all(e["skipped"] for e in again.values())
    assert res["babi"]["train"]["correct"].stat().st_mtime_ns == mtime
    cfg2 = dict(cfg, trace_seed=cfg["trace_seed"] + 1)
    assert not traces.prepare_traces(cfg2)["babi"]["skipped"]


def test_missing_data_is_a_clear_error(tmp_study):
    cfg = dict(tmp_study, datasets=["babi"], profile="nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        traces.prepare_traces(cfg)


def test_side_by_side_marks_the_corrupted_steps():
    frames = {c: traces.build_condition(COTEMP, "cotempqa", c, 0, labels=LABELS["cotempqa"])
              for c in conditions.names("base")}
    table, diff = traces.side_by_side(frames, "c/1")
    assert list(table.columns) == list(conditions.names("base"))
    assert diff["correct"].tolist() == [False, False, False]
    assert diff["incorrect"].tolist() == [True, True, False]
    assert diff["incorrect_class"].tolist() == [True, False, False]
    assert diff["incorrect_ir"].tolist() == [False, True, False]
    assert diff["shuffled"].tolist() == [True, True, False]


def test_length_stats_count_truncation():
    frames = {c: traces.build_condition(BABI, "babi", c, 0) for c in ("vanilla", "correct")}
    st = traces.length_stats(frames, "tiny", max_length=60).set_index("condition")
    assert (st.loc["correct", "mean"] > st.loc["vanilla", "mean"])
    lengths = st.loc["correct", "max"]
    assert st.loc["correct", "truncated"] == 2 and lengths > 60
    big = traces.length_stats(frames, "tiny", max_length=10_000)
    assert big["truncated"].sum() == 0


def test_krsl_needs_the_correct_and_incorrect_sets():
    assert traces.trained_conditions({"conditions": ["vanilla", "krsl"]}) == ["vanilla", "correct", "incorrect"]
    assert traces.trained_conditions({"conditions": ["incorrect", "correct", "krsl"]}) == ["incorrect", "correct"]
    with pytest.raises(ValueError, match="unknown condition"):
        traces.trained_conditions({"conditions": ["random"]})
    with pytest.raises(ValueError, match="teacher_conditions"):
        traces.trained_conditions({"conditions": ["tset_correct"]})


def test_prepare_traces_original_rendering_is_a_new_stamp_with_the_originals_text(tmp_study):
    cfg = dict(tmp_study, datasets=["cotempqa", "babi"])
    proj = traces.prepare_traces(cfg)
    orig_cfg = dict(cfg, rendering="original")
    kw = dict(stage="traces", inputs=traces.data_inputs(cfg, "babi"))
    assert config.is_fresh(proj["babi"]["dir"], cfg, traces.TRACE_KEYS, **kw)
    assert not config.is_fresh(proj["babi"]["dir"], orig_cfg, traces.TRACE_KEYS, **kw)
    res = traces.prepare_traces(orig_cfg)
    assert not any(e["skipped"] for e in res.values())
    babi_train = traces.load_condition(cfg["profile"], "babi", "correct")
    babi_test = pd.read_parquet(res["babi"]["test"])
    assert babi_train["user"][0].endswith(" Only return the answer.\n")       # training: a space
    assert babi_test["user"][0].endswith("\nOnly return the answer.\n")       # inference: a newline
    inc = traces.load_condition(cfg["profile"], "babi", "incorrect")
    assert all(f == f.lower() for fs in inc["trace_facts"] for f in fs)
    ct = traces.load_condition(cfg["profile"], "cotempqa", "incorrect")
    assert all(len(fs) <= 1 for fs in ct["trace_facts"])
    assert not ct["assistant"][0].split("question: ", 1)[1].startswith("['")
    assert config.read_json(res["babi"]["dir"] / "stamp.json")["config"]["rendering"] == "original"


def test_steps_of_reads_either_rendering():
    for rendering in traces.RENDERINGS:
        fr = traces.build_condition(COTEMP, "cotempqa", "incorrect", 0, labels=LABELS["cotempqa"],
                                    rendering=rendering)
        st = traces.steps_of(fr.iloc[0].to_dict(), "cotempqa")
        assert fr["assistant"][0] == T.render_trace_text("cotempqa", fr["trace_label"][0],
                                                         st["retrieval"].split("question: ", 1)[1], st["answer"])
        assert st["classification"].endswith(f"{fr['trace_label'][0]}.")
