"""Loaders (real files, fixtures; the hub loaders in test_hub_layout.py), schema validation, bad input,
splits, caps, the prepare stage and its data card."""
from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from helpers import config, data, decompose, paths
from helpers import qa
import helpers.qa.babi, helpers.qa.cotempqa, helpers.qa.marco  # noqa: E401,F401
from helpers.qa.babi import PAPER11 as BABI_PAPER11, TASKS as BABI_TASKS

SHARED = paths.SHARED_DATA
needs_babi = pytest.mark.skipif(not (SHARED / "babi" / "en").is_dir(), reason="../shared/data/babi absent")
needs_cotempqa = pytest.mark.skipif(not (SHARED / "cotempqa").is_dir(), reason="../shared/data/cotempqa absent")


# =================================================================== fixtures (files)

def _cot_record(i, scenario, answers=("Redfield Labs",), facts=None, **kw):
    facts = facts if facts is not None else [
        f"Ada Holt{i} works for Redfield Labs from 1990 to 1995.",
        f"Ada Holt{i} works for Ashford Bank from 1991 to 1993.",
        f"Ada Holt{i} holds the position of mayor in 1980."]
    r = {"index": i, "triple_element": "S1_R1_O2",
         "question": f"While Ada Holt{i} was working for Ashford Bank, which employer did Ada Holt{i} work for at the same time?",
         "facts": facts, "answer": list(answers)}
    r.update(kw)
    return r


SIZES = {"equal": 11, "overlap": 7, "during": 13, "mix": 6}


def write_cotempqa(root):
    d = root / "cotempqa"
    d.mkdir(parents=True)
    for s, n in SIZES.items():
        recs = [_cot_record(i, s) for i in range(n)]
        if s == "equal":
            del recs[2]["facts"]                       # a row missing a field
            recs[3]["facts"] = []                      # an empty context
            recs[4]["answer"] = ["Nowhere Inc"]        # answer in no fact
        with open(d / f"{s}.json", "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
            f.write("\n")                              # blank lines are allowed
    return root


def _babi_story(k, qa=True):
    lines = [f"1 Mary{k} moved to the bathroom.", f"2 John{k} went to the hallway."]
    if qa:
        lines += [f"3 Where is Mary{k}? \tbathroom\t1", "4 Mary{k} went to the garden.".format(k=k),
                  f"5 Where is Mary{k}? \tgarden\t4"]
    return lines


def write_babi(root, n_train=5, n_test=21, tasks=BABI_PAPER11):
    d = root / "babi" / "en"
    d.mkdir(parents=True)
    for t in tasks:
        for pool, n in (("train", n_train), ("test", n_test)):
            lines = [ln for k in range(n) for ln in _babi_story(k)]
            (d / f"qa{t}_{BABI_TASKS[t]}_{pool}.txt").write_text("\n".join(lines) + "\n")
    return root


# =================================================================== schema

def _good_row(**kw):
    r = data.make_row(id="babi/qa1/train/0", dataset="babi", split="train", question="Where is Mary?",
                      context=["Mary moved to the bathroom.", "John went to the hallway."], answers=["bathroom"],
                      category="single-supporting-fact", source="local:x.txt",
                      meta={"task": 1, "line_ids": ["1", "2"], "supporting_ids": ["1"]})
    r.update(kw)
    return r


def _decomposed(df, ds):
    """The rows with 02's decomposition (label, relevant, flags), indexed by id."""
    return decompose.problems_frame(df, ds).set_index("id")


def test_make_row_and_validate():
    df = data.frame([_good_row()])
    assert list(df.columns) == data.COLUMNS
    data.validate(df)
    assert "relevant" not in df.columns and not df.loc[0, "synthetic"]  # 01 applies no rule
    d = _decomposed(df, "babi")
    assert d["relevant"].tolist() == [[0]] and d["flags"].tolist() == [[]]


@pytest.mark.parametrize("change, col", [
    ({"dataset": "squad"}, "dataset"),
    ({"meta": "{not json"}, "meta"),
    ({"category": "qa1"}, "category"),
    ({"answers": []}, "answers"),
    ({"split": "validation"}, "split"),
    ({"context": "Mary moved."}, "context"),
    ({"synthetic": True}, "synthetic"),
])
def test_validate_names_row_and_column(change, col):
    df = data.frame([_good_row(), _good_row(id="babi/qa1/train/1", **change)])
    with pytest.raises(ValueError, match=rf"id='babi/qa1/train/1'.*column '{col}'"):
        data.validate(df)


def test_validate_columns_and_duplicates():
    df = data.frame([_good_row()])
    with pytest.raises(ValueError, match="missing \\['meta'\\]"):
        data.validate(df.drop(columns=["meta"]))
    with pytest.raises(ValueError, match="duplicated id"):
        data.validate(pd.concat([df, df], ignore_index=True))


# =================================================================== CoTempQA

def test_cotempqa_local_fixture(tmp_path):
    root = write_cotempqa(tmp_path)
    df, rep = qa.cotempqa.load_local(root, seed=42)
    data.validate(df)
    # the row without facts is excluded by rule and reported with its file and line
    assert rep["excluded"] == [{"id": "cotempqa/equal/2", "reason": "missing field facts",
                                "where": "cotempqa/equal.json:3"}]
    kept = {s: n - (s == "equal") for s, n in SIZES.items()}
    for s, n in kept.items():
        part = df[df["category"] == s]
        assert len(part) == n
        assert (part["split"] == "test").sum() == round(0.2 * n)   # pandas' rounding
    # the same split as pandas' own sample on the file's rows
    eq = df[df["category"] == "equal"].reset_index(drop=True)
    expect = set(eq.sample(frac=0.2, random_state=42)["id"])
    assert set(eq.loc[eq["split"] == "test", "id"]) == expect
    by_id = _decomposed(df, "cotempqa")
    assert by_id.loc["cotempqa/equal/3", "flags"] == ["empty_context"]
    assert by_id.loc["cotempqa/equal/4", "flags"] == ["answer_in_no_fact"]
    assert by_id.loc["cotempqa/equal/4", "relevant"] == []
    r = by_id.loc["cotempqa/overlap/1"]
    assert r["relevant"] == [0] and r["answers"] == ["Redfield Labs"] and r["source"] == "local:cotempqa/overlap.json"
    meta = json.loads(r["meta"])
    assert meta["triple_element"] == "S1_R1_O2" and meta["index"] == 1 and meta["line"] == 2


def test_malformed_jsonl_fails_with_file_and_line(tmp_path):
    root = write_cotempqa(tmp_path)
    p = root / "cotempqa" / "mix.json"
    lines = p.read_text().splitlines()
    lines[2] = '{"index": 2, "question": "broken'
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"mix\.json:3: malformed JSON"):
        qa.cotempqa.load_local(root)
    (root / "cotempqa" / "mix.json").unlink()
    with pytest.raises(FileNotFoundError, match="mix.json"):
        qa.cotempqa.load_local(root)


@needs_cotempqa
def test_real_cotempqa_split_is_20_percent_per_category():
    df, rep = qa.cotempqa.load_local(SHARED, seed=42)
    data.validate(df)
    assert rep["excluded"] == []
    for s in ("equal", "overlap", "during", "mix"):
        n_file = sum(1 for ln in open(SHARED / "cotempqa" / f"{s}.json") if ln.strip())
        part = df[df["category"] == s]
        assert len(part) == n_file
        assert (part["split"] == "test").sum() == round(0.2 * n_file)
    test = df[df["split"] == "test"]["category"].value_counts()
    # the complete scenario files give the original's test sizes (STUDY_SPEC §1)
    assert (test["equal"], test["overlap"], test["mix"]) == (87, 131, 113)
    assert df["id"].is_unique


# =================================================================== bAbI

def test_babi_fixture_one_sample_per_story(tmp_path):
    root = write_babi(tmp_path)
    df, rep = qa.babi.load_local(root, "paper11", seed=42)
    data.validate(df)
    assert rep["excluded"] == []
    assert (df["split"] == "train").sum() == 5 * 11
    assert (df["split"] == "test").sum() == 2 * 11          # floor(10% of 21) per task
    r = _decomposed(df, "babi").loc["babi/qa4/train/3"]
    assert r["question"] == "Where is Mary3?" and r["answers"] == ["bathroom"]
    assert r["context"] == ["Mary3 moved to the bathroom.", "John3 went to the hallway."]
    assert r["relevant"] == [0] and r["category"] == "two-arg-relations"
    meta = json.loads(r["meta"])
    assert meta["task"] == 4 and meta["supporting_ids"] == ["1"] and meta["line"] == 3 + 5 * 3
    assert set(df["category"]) == {BABI_TASKS[t] for t in BABI_PAPER11}


@pytest.mark.parametrize("bad, why", [
    ("x Mary moved.", "numeric line id"),
    ("3 Where is Mary?\tbathroom", "tab-separated"),
    ("3 Where is Mary?\tbathroom\tone", "supporting ids must be numbers"),
    ("7 Mary went home.", "does not follow"),
])
def test_babi_malformed_line(tmp_path, bad, why):
    p = tmp_path / "qa1_single-supporting-fact_train.txt"
    p.write_text("1 Mary moved to the bathroom.\n2 John went to the hallway.\n" + bad + "\n")
    with pytest.raises(ValueError, match=rf"{p.name}:3: .*{why}"):
        qa.babi.parse_babi(p)


def test_babi_story_without_question_is_reported(tmp_path):
    root = write_babi(tmp_path, tasks=BABI_PAPER11)
    p = root / "babi" / "en" / "qa1_single-supporting-fact_train.txt"
    p.write_text(p.read_text() + "\n".join(_babi_story(99, qa=False)) + "\n")
    df, rep = qa.babi.load_local(root, "paper11", 42)
    assert rep["excluded"] == [{"id": "babi/qa1/train/5", "reason": "story without a question",
                                "where": "babi/en/qa1_single-supporting-fact_train.txt"}]


@needs_babi
def test_real_babi_split_3773_376():
    df, rep = qa.babi.load_local(SHARED, "paper11", seed=42)
    data.validate(df)
    assert rep["excluded"] == []
    assert (df["split"] == "train").sum() == 3773
    assert (df["split"] == "test").sum() == 376
    assert df["id"].is_unique and set(df["category"]) == {BABI_TASKS[t] for t in BABI_PAPER11}
    # the first question of each story, its supporting lines inside the context
    df = _decomposed(df, "babi").reset_index()
    assert (df["relevant"].map(len) > 0).all()
    assert not df["flags"].map(len).any()
    r = df.set_index("id").loc["babi/qa1/train/0"]
    assert (r["question"], r["answers"], r["relevant"]) == ("Where is Mary?", ["bathroom"], [0])


@needs_babi
def test_real_babi_all20_option():
    df, _ = qa.babi.load_local(SHARED, "all20", seed=42)
    assert df["category"].nunique() == 20
    assert (df["split"] == "train").sum() > 3773


# =================================================================== MS MARCO (local files)

def _marco_rec(qid, qtype, answer="1987", sel=(0, 1, 0)):
    texts = ["The river is wide.", f"The bridge was built in {answer} by masons.", "Ferries run daily."]
    return {"query": f"question {qid}", "query_id": qid, "query_type": qtype, "answers": [answer],
            "passages": {"is_selected": list(sel), "passage_text": texts, "url": ["u1", "u2", "u3"]},
            "wellFormedAnswers": []}


def write_marco(root):
    d = root / "marco"
    d.mkdir(parents=True)
    types = ["DESCRIPTION", "NUMERIC", "ENTITY", "LOCATION", "PERSON"]
    with open(d / "v2.1_train.jsonl", "w") as f:
        for i in range(20):
            f.write(json.dumps(_marco_rec(i, types[i % 5])) + "\n")
    recs = [_marco_rec(100 + i, types[i % 5]) for i in range(10)]
    recs[0]["answers"] = ["No Answer Present."]
    pd.DataFrame(recs).to_parquet(d / "v2.1_validation.parquet")
    return root


def test_marco_local_files_in_hub_schema(tmp_path):
    root = write_marco(tmp_path)
    df, rep = qa.marco.load_local(root, seed=1, per_type={"train": 3, "test": 2})
    data.validate(df)
    assert df.groupby(["split", "category"]).size().tolist() == [2] * 5 + [3] * 5
    df = _decomposed(df, "marco").reset_index()
    r = df[df["split"] == "train"].iloc[0]
    assert r["context"][1].startswith("The bridge") and r["relevant"] == [1]
    meta = json.loads(r["meta"])
    assert meta["is_selected"] == [0, 1, 0] and meta["answer_passage"] == r["context"][1]
    assert r["id"] == f"marco/v2.1/train/{meta['query_id']}"
    na = df.set_index("id").loc["marco/v2.1/validation/100"]
    assert na["flags"] == ["no_answer_present"] and na["relevant"] == []
    assert json.loads(na["meta"])["answer_passage"] == "No Answer Present."


# =================================================================== hub
# The hub loaders run through the real datasets.load_dataset on folders laid out as the hub
# repos are (test_hub_layout.py); the checks before them against local listeners (test_hub.py).

def test_babi_hub_story_layouts():
    """A hub story as a struct of lists (the parquet conversion) or a list of line objects."""
    cols = qa.babi._babi_hub_story({"story": {"id": ["1", "2"], "type": [0, 1], "text": ["A.", "Q?"],
                                           "supporting_ids": [[], ["1"]], "answer": ["", "x"]}})
    rows = qa.babi._babi_hub_story({"story": [{"id": "1", "type": "context", "text": "A.", "supporting_ids": [], "answer": ""},
                                           {"id": "2", "type": "question", "text": "Q?", "supporting_ids": ["1"], "answer": "x"}]})
    assert cols == rows
    assert [ln["question"] for ln in rows] == [False, True] and rows[1]["supporting"] == ["1"]
    assert rows[1]["answer"] == "x" and rows[0]["answer"] is None


def test_hub_offline_fails_fast_naming_alternatives(monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset called offline"))
    for fn in (qa.cotempqa.load_hub, qa.marco.load_hub, qa.babi.load_hub):
        with pytest.raises(data.HubUnavailable, match="HF_HUB_OFFLINE=1.*PROFILE=quick.*synthetic.*local"):
            fn()


def test_hub_pins():
    """Every pin is a full commit id, or one of the two documented run-time resolutions."""
    for ds in qa.names():
        rev = data.hub_pin(ds)["revision"]
        assert len(rev) == 40 or (ds, rev) in {("cotempqa", "9f49aba"), ("babi", "refs/convert/parquet")}, ds


# =================================================================== sampling, prepare

def test_stratified_sample():
    df = pd.DataFrame({"category": ["a"] * 60 + ["b"] * 30 + ["c"] * 10, "v": range(100)})
    s = data.stratified_sample(df, 10, seed=1)
    assert s["category"].value_counts().to_dict() == {"a": 6, "b": 3, "c": 1}
    assert s.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(s, data.stratified_sample(df, 10, seed=1))
    assert not s.equals(data.stratified_sample(df, 10, seed=2))
    assert len(data.stratified_sample(df, None, 1)) == 100 and len(data.stratified_sample(df, 500, 1)) == 100
    assert data.stratified_sample(df, 2, 1)["category"].value_counts().to_dict() == {"a": 1, "b": 1}
    assert data.stratified_sample(df, 3, 1)["category"].value_counts().to_dict() == {"a": 1, "b": 1, "c": 1}


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    c = config.load_profile("smoke")
    c["profile"] = "t"
    return c


def test_prepare_synthetic_writes_skips_and_cards(cfg, tmp_path, monkeypatch):
    out = data.prepare(cfg)
    assert set(out) == {"cotempqa", "marco", "babi"}
    for ds in out:
        assert len(out[ds]["train"]) == cfg["n_train"] and len(out[ds]["test"]) == cfg["n_test"]
        folder = tmp_path / "data" / "t" / ds
        assert (folder / "train.parquet").exists() and (folder / "stamp.json").exists()
        back = data.load_split("t", ds, "train")
        data.validate(back)
        assert isinstance(back.loc[0, "context"], list) and isinstance(back.loc[0, "answers"], list)
        pd.testing.assert_frame_equal(back, out[ds]["train"], check_dtype=False)
    card = json.loads((tmp_path / "data" / "t" / "data_card.json").read_text())
    assert card["datasets"]["babi"]["synthetic"] is True and card["datasets"]["babi"]["source"] == "synthetic"
    assert sum(card["datasets"]["cotempqa"]["counts"]["test"].values()) == cfg["n_test"]
    assert card["datasets"]["marco"]["context_length"]["train"]["facts"]["mean"] == 8
    tables = data.card_tables(card)
    assert set(tables["counts"]["dataset"]) == {"cotempqa", "marco", "babi"}
    # fresh: no loader runs the second time; force rebuilds
    monkeypatch.setattr(data, "load_dataset_source", lambda *a, **k: pytest.fail("not skipped"))
    again = data.prepare(cfg)
    pd.testing.assert_frame_equal(again["babi"]["test"], out["babi"]["test"], check_dtype=False)
    with pytest.raises(BaseException, match="not skipped"):
        data.prepare(cfg, force=True)
    # a changed parameter is stale
    with pytest.raises(BaseException, match="not skipped"):
        data.prepare(dict(cfg, data_seed=7))


def test_sizes_per_dataset(cfg):
    # synthetic: the generator makes each dataset's own number of problems
    sizes = {"cotempqa": 12, "marco": 8, "babi": 8}
    out = data.prepare(dict(cfg, n_train=sizes, n_test=4))
    assert {ds: len(out[ds]["train"]) for ds in out} == sizes
    assert all(len(out[ds]["test"]) == 4 for ds in out)
    with pytest.raises(KeyError, match="not for 'babi'"):
        data.prepare(dict(cfg, n_train={"cotempqa": 12, "marco": 8}), force=True)
    assert config.for_dataset({"n": 3}, "n", "x") == 3 and config.for_dataset({"n": {"x": 5}}, "n", "x") == 5


def test_prepare_local_caps_flags_and_marco_fallback(cfg, tmp_path):
    root = write_babi(write_cotempqa(tmp_path / "src"))
    cfg.update(data_source="local", data_dir=str(root), n_train={"cotempqa": 12, "marco": 10, "babi": 12},
               n_test=None)  # a per-dataset cap
    with pytest.warns(UserWarning, match="SYNTHETIC MS MARCO"):
        out = data.prepare(cfg)
    assert len(out["marco"]["train"]) == 10
    card = data.read_card("t")
    m = card["datasets"]["marco"]
    assert m["source"] == "synthetic" and m["synthetic"] and "SYNTHETIC" in m["warnings"][0]
    c = card["datasets"]["cotempqa"]
    assert c["source"].startswith("local:") and not c["synthetic"]
    assert c["excluded"]["missing field facts"]["ids"] == ["cotempqa/equal/2"]
    cot = out["cotempqa"]
    assert len(cot["train"]) == 12
    assert c["uncapped"]["test"] == len(cot["test"]) == sum(round(0.2 * (n - (s == "equal"))) for s, n in SIZES.items())
    # stratified: every scenario keeps train rows
    assert cot["train"]["category"].nunique() == 4
    assert "flagged" not in c  # 01 applies no rule: the flags are 02's
    flagged = decompose.run(cfg)["datasets"]["cotempqa"]["flagged"]
    for f, ids in flagged.items():
        assert ids["count"] == len(ids["ids"])
    probs = pd.concat([decompose.load_problems("t", "cotempqa", s) for s in ("train", "test")])
    all_flags = probs["flags"].explode().dropna().value_counts().to_dict()
    assert {f: v["count"] for f, v in flagged.items()} == all_flags and all_flags
    assert len(out["babi"]["train"]) == 12 and len(out["babi"]["test"]) == 22
    # the fallback warning is repeated when the fresh artifacts are reused
    with pytest.warns(UserWarning, match="SYNTHETIC MS MARCO"):
        data.prepare(cfg)


def test_prepare_errors(cfg):
    with pytest.raises(ValueError, match="data_dir"):
        data.prepare(dict(cfg, data_source="local", data_dir=""))
    with pytest.raises(ValueError, match="data_source"):
        data.prepare(dict(cfg, data_source="ftp"))
    with pytest.raises(ValueError, match="11 tasks"):
        data.prepare(dict(cfg, datasets=["babi"], babi_tasks="all20"))
    with pytest.raises(FileNotFoundError, match="make data"):
        data.load_split("nothing-here", "babi", "train")


def test_prepare_hub_offline_is_a_clear_error(cfg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.HubUnavailable, match="DATA_DIR"):
        data.prepare(dict(cfg, data_source="hub", datasets=["cotempqa"]))


@needs_babi
@needs_cotempqa
def test_prepare_on_real_files(cfg):
    cfg.update(data_source="local", data_dir=str(SHARED), n_train=None, n_test=None, datasets=["babi", "cotempqa"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MARCO requested: no fallback warning
        out = data.prepare(cfg)
    assert (len(out["babi"]["train"]), len(out["babi"]["test"])) == (3773, 376)
    card = data.read_card("t")
    assert card["datasets"]["babi"]["totals"] == {"train": 3773, "test": 376}
    assert card["datasets"]["cotempqa"]["counts"]["test"]["equal"] == 87
