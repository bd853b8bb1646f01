"""The hub loaders through the real ``datasets.load_dataset`` code path: each test builds a
local folder laid out exactly as the hub repo is and calls the same loader the paper
profile calls, with only the location different:

* bAbI, ``facebook/babi_qa`` at its parquet-conversion branch: ``en-qa<N>/{train,test}/0000.parquet``
  with the hub's ``story`` feature (a sequence of ``{id, type: context|question, text,
  supporting_ids, answer}``);
* MS MARCO, ``microsoft/ms_marco``: config folders ``v1.1/`` and ``v2.1/`` holding
  ``{train,validation,test}-NNNNN-of-NNNNN.parquet`` in the hub schema;
* CoTempQA, ``Warrieryes/CotempQA``: ``equal.json``, ``overlap.json``, ``during.json``,
  ``mix.json`` (JSON lines) at the root.

bAbI and CoTempQA are built from the real files in ../shared/data when present, else from
the small synthetic fixtures of test_data; the rows must equal what the local-file loaders
(an independent reader) make of the same data, and the paper splits must hold."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from helpers import data, paths
from helpers import decompose
from helpers import qa
import helpers.qa.babi, helpers.qa.cotempqa, helpers.qa.marco  # noqa: E401,F401
from helpers.qa.babi import PAPER11 as BABI_PAPER11, TASKS as BABI_TASKS
from helpers.qa.cotempqa import SCENARIOS as COTEMPQA_SCENARIOS
from helpers.qa.marco import QUERY_TYPES as MARCO_QUERY_TYPES
from test_data import write_babi, write_cotempqa

SHARED = paths.SHARED_DATA
REV = "fedcba9876543210fedcba9876543210fedcba98"   # stands for the pinned commit


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """datasets writes its Arrow cache under tmp, not the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


class Spy:
    """Records every ``datasets.load_dataset`` call and runs the real one."""

    def __init__(self, monkeypatch):
        import datasets

        self.calls, real = [], datasets.load_dataset

        def spy(*args, **kwargs):
            self.calls.append((args, kwargs))
            return real(*args, **kwargs)

        monkeypatch.setattr(datasets, "load_dataset", spy)


# ------------------------------------------------------------------------------ layouts
def babi_features():
    from datasets import ClassLabel, Features, Sequence, Value

    return Features({"story": Sequence({
        "id": Value("string"), "type": ClassLabel(names=["context", "question"]),
        "text": Value("string"), "supporting_ids": Sequence(Value("string")),
        "answer": Value("string")})})


def babi_hub_tree(src_root, dst, tasks):
    """The parquet-conversion tree of facebook/babi_qa (en, 1k) from bAbI text files."""
    from datasets import Dataset

    for t in tasks:
        for pool in ("train", "test"):
            stories = qa.babi.parse_babi(qa.babi.task_file(src_root, t, pool))
            recs = [{"story": {"id": [ln["id"] for ln in st],
                               "type": [1 if ln["question"] else 0 for ln in st],
                               "text": [ln["text"] for ln in st],
                               "supporting_ids": [ln["supporting"] for ln in st],
                               "answer": [ln["answer"] or "" for ln in st]}} for st in stories]
            d = dst / f"en-qa{t}" / pool
            d.mkdir(parents=True)
            Dataset.from_list(recs, features=babi_features()).to_parquet(d / "0000.parquet")
    return dst


def cotempqa_hub_tree(src_root, dst):
    """Warrieryes/CotempQA: the four scenario files at the repo root."""
    dst.mkdir(parents=True)
    for s in COTEMPQA_SCENARIOS:
        shutil.copy(src_root / "cotempqa" / f"{s}.json", dst / f"{s}.json")
    return dst


def marco_features():
    from datasets import Features, Sequence, Value

    return Features({
        "answers": Sequence(Value("string")),
        "passages": Sequence({"is_selected": Value("int32"), "passage_text": Value("string"),
                              "url": Value("string")}),
        "query": Value("string"), "query_id": Value("int32"), "query_type": Value("string"),
        "wellFormedAnswers": Sequence(Value("string"))})


def marco_rec(qid, qtype, answers=None):
    texts = [f"The river {qid} is wide.", f"The bridge {qid} was built in 1987 by masons.",
             "Ferries run daily."]
    return {"answers": ["1987"] if answers is None else answers,
            "passages": {"is_selected": [0, 1, 0], "passage_text": texts,
                         "url": ["http://a", "http://b", "http://c"]},
            "query": f"when was bridge {qid} built", "query_id": qid, "query_type": qtype,
            "wellFormedAnswers": []}


MARCO_SIZES = {"train": 40, "validation": 15, "test": 10}   # rows per config folder


def marco_hub_tree(dst):
    """microsoft/ms_marco: v1.1/ and v2.1/ with sharded parquet files per split. Query
    types cycle, ids are unique per split; the test split has no answers (as on the hub)."""
    from datasets import Dataset

    for version, base in (("v1.1", 500_000), ("v2.1", 0)):
        d = dst / version
        d.mkdir(parents=True)
        for k, (split, n) in enumerate(MARCO_SIZES.items()):
            recs = [marco_rec(base + 10_000 * k + i, MARCO_QUERY_TYPES[i % 5].lower()
                              if i % 7 == 0 else MARCO_QUERY_TYPES[i % 5],
                              [] if split == "test" else None) for i in range(n)]
            shards = 2 if split == "train" else 1
            for s in range(shards):
                part = recs[s::shards]
                Dataset.from_list(part, features=marco_features()).to_parquet(
                    d / f"{split}-{s:05d}-of-{shards:05d}.parquet")
    return dst


def _comparable(df):
    """Rows without the fields that name where they came from."""
    out = df.drop(columns=["source", "meta"]).sort_values("id").reset_index(drop=True)
    meta = [{k: v for k, v in json.loads(m).items() if k not in ("file", "line")} for m in
            df.sort_values("id")["meta"]]
    return out.assign(meta=[json.dumps(m, sort_keys=True) for m in meta])


# ------------------------------------------------------------------------------ bAbI
@pytest.fixture(scope="module")
def babi_source(tmp_path_factory):
    if (SHARED / "babi" / "en").is_dir():
        return SHARED, True
    return write_babi(tmp_path_factory.mktemp("babi-src"), n_train=5, n_test=21), False


def test_babi_through_load_dataset(babi_source, tmp_path, monkeypatch):
    src, real = babi_source
    tree = babi_hub_tree(src, tmp_path / "facebook__babi_qa", BABI_PAPER11)
    spy = Spy(monkeypatch)
    df, rep = qa.babi.load_hub("paper11", seed=42, revision=REV, location=tree)
    data.validate(df)
    # the very call the profile makes on the hub, location aside
    assert spy.calls == [((str(tree),), {"data_files": {"train": f"en-qa{t}/train/*.parquet",
                                                        "test": f"en-qa{t}/test/*.parquet"},
                                         "revision": REV}) for t in BABI_PAPER11]
    assert rep["source"] == f"hub-layout:{tree}@{REV}" and rep["excluded"] == []
    local, _ = qa.babi.load_local(src, "paper11", seed=42)
    pd.testing.assert_frame_equal(_comparable(df), _comparable(local))
    n = df.groupby("split").size().to_dict()
    if real:  # the paper's split (STUDY_SPEC §1)
        assert n == {"train": 3773, "test": 376}
    else:
        assert n == {"train": 5 * 11, "test": 2 * 11}
    assert set(df["category"]) == {BABI_TASKS[t] for t in BABI_PAPER11}
    r = df[df["id"] == "babi/qa1/train/0"].iloc[0]
    assert r["question"].endswith("?") and decompose.relevant("babi", r) and len(r["answers"]) == 1


def test_babi_config_names_are_not_in_the_parquet_tree(babi_source, tmp_path):
    """Why the loader passes data_files: datasets infers one 'default' config from this tree."""
    import datasets

    tree = babi_hub_tree(babi_source[0], tmp_path / "b", [1])
    with pytest.raises(ValueError, match="en-qa1' not found"):
        datasets.load_dataset(str(tree), "en-qa1")


# ------------------------------------------------------------------------------ CoTempQA
def test_cotempqa_through_load_dataset(tmp_path, monkeypatch):
    real = (SHARED / "cotempqa").is_dir()
    src = SHARED if real else write_cotempqa(tmp_path / "src")
    tree = cotempqa_hub_tree(src, tmp_path / "Warrieryes__CotempQA")
    spy = Spy(monkeypatch)
    df, rep = qa.cotempqa.load_hub(seed=42, revision=REV, location=tree)
    data.validate(df)
    assert spy.calls == [((str(tree),), {"data_files": {s: f"{s}.json" for s in COTEMPQA_SCENARIOS},
                                         "revision": REV})]
    local, lrep = qa.cotempqa.load_local(src, seed=42)
    pd.testing.assert_frame_equal(_comparable(df), _comparable(local))
    assert [e["id"] for e in rep["excluded"]] == [e["id"] for e in lrep["excluded"]]
    sizes = local.groupby("category").size()
    test = df[df["split"] == "test"].groupby("category").size()
    for s in COTEMPQA_SCENARIOS:   # per scenario sample(frac=0.2) is test
        assert test[s] == round(0.2 * sizes[s])
    if real:
        assert test["equal"] == 87 and test["overlap"] == 131   # STUDY_SPEC §1


# ------------------------------------------------------------------------------ MS MARCO
def test_marco_through_load_dataset(tmp_path, monkeypatch):
    tree = marco_hub_tree(tmp_path / "microsoft__ms_marco")
    spy = Spy(monkeypatch)
    df, rep = qa.marco.load_hub(seed=3, revision=REV, per_type={"train": 3, "test": 2},
                                  location=tree)
    data.validate(df)
    assert spy.calls == [((str(tree),), {"data_files": {"train": "v2.1/train-*.parquet"},
                                         "split": "train", "revision": REV}),
                         ((str(tree),), {"data_files": {"validation": "v2.1/validation-*.parquet"},
                                         "split": "validation", "revision": REV})]
    # 1,000 / 200 per query type in the paper; here 3 / 2 of 8 / 3 per type
    assert df.groupby(["split", "category"]).size().to_dict() == {
        **{("train", t): 3 for t in MARCO_QUERY_TYPES}, **{("test", t): 2 for t in MARCO_QUERY_TYPES}}
    ids = df["id"].tolist()
    assert all(i.startswith("marco/v2.1/train/") for i in ids[:15])
    assert all(i.startswith("marco/v2.1/validation/1") for i in ids[15:])  # never the test split
    # the sample is the seeded per-type sample of the whole (two-shard) train split
    import datasets

    full = datasets.concatenate_datasets([
        datasets.Dataset.from_parquet(str(p)) for p in sorted((tree / "v2.1").glob("train-*.parquet"))])
    qt = pd.Series(full["query_type"]).str.upper()
    want = sorted(full["query_id"][i] for t in MARCO_QUERY_TYPES
                  for i in qt[qt == t].sample(n=3, random_state=3).index)
    got = sorted(json.loads(m)["query_id"] for m in df.loc[df["split"] == "train", "meta"])
    assert got == want
    r = df.iloc[0]
    assert decompose.relevant("marco", r) == [1] and json.loads(r["meta"])["is_selected"] == [0, 1, 0]
    assert r["context"][1].startswith("The bridge")
    # the other config folder, the same way
    df1, _ = qa.marco.load_hub(seed=3, version="v1.1", revision=REV, per_type={"train": 1, "test": 1},
                                 location=tree)
    assert spy.calls[-1][1]["data_files"] == {"validation": "v1.1/validation-*.parquet"}
    assert len(df1) == 10 and df1["id"].str.startswith("marco/v1.1/").all()


def test_location_and_revision_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        qa.cotempqa.load_hub(location=tmp_path / "absent")
    with pytest.raises(ValueError, match="full 40-hex"):
        qa.cotempqa.load_hub(location=tmp_path, revision="9f49aba")
