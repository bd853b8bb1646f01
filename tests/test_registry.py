"""The dataset registry (helpers.qa): a toy dataset added through the recipe of
docs/architecture.md runs through 01 -> 02 -> 03 -> scoring with its own hooks, and no module
outside helpers/qa branches on a dataset's name."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import config, data, decompose, paths, qa, scoring, traces
from helpers.qa import base

HELPERS = Path(qa.__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ a toy dataset
# The recipe: one module's worth of code building a DatasetSpec (labels, rules, sentences,
# rendering, scorer and corruption hooks, a generator), registered, named in the profile.

TOY_LABELS = ("colour", "shape")
ANIMALS = ["cat", "dog", "owl", "fox", "elk", "yak", "emu", "bat"]
COLOURS = ["red", "blue", "green", "grey"]
SHAPES = ["round", "square", "flat", "long"]


def toy_classify(row):
    return base.meta(row)["kind"]  # the label lives in the source metadata


def toy_relevant(row, variant="default"):
    """Default: the facts that end with '!' (the toy's marked facts); variant ``last``: the
    last fact."""
    ctx = base.context(row)
    if variant == "last":
        return [len(ctx) - 1]
    return [i for i, c in enumerate(ctx) if c.endswith("!")]


def toy_ambiguity(row):
    n = len(toy_relevant(row))
    return "none" if n == 0 else "several" if n > 1 else "unique"


def _toy_problem(rng, kind):
    animals = rng.sample(ANIMALS, 4)
    values = COLOURS if kind == "colour" else SHAPES
    facts = [f"The {a} is {rng.choice(values)}." for a in animals]
    k = rng.randrange(4)
    facts[k] = facts[k][:-1] + "!"
    answer = facts[k].split()[-1][:-1]
    return {"question": f"What {kind} is the {animals[k]}?", "context": facts, "answers": [answer],
            "meta": {"kind": kind}}


def toy_generate(n, seed, split):
    return base.synthetic_frame("toy", TOY_LABELS, _toy_problem, n, seed, split)


TOY = base.DatasetSpec(
    name="toy", display_name="Toy",
    labels=lambda babi_tasks="all20": TOY_LABELS, classify=toy_classify,
    variants=("default", "last"), relevant=toy_relevant, ambiguity=toy_ambiguity,
    quality_flags=lambda row: base.default_quality_flags(row, toy_ambiguity(row)),
    classification="Toy kind: {label}.", retrieval="Toy facts: {facts}",
    render_context=lambda context: " | ".join(context),
    render_answer=lambda answers: answers[0].upper(),
    original_separators={"train": " ", "test": " "},
    corruption_labels=lambda categories, babi_tasks=None: TOY_LABELS,
    answer_scorer="normalized", rouge_l=True,
    compat_label_sentence=0, compat_label_casefold=False,
    original_label_scan=TOY_LABELS,
    generate=toy_generate,
)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    qa.register(TOY)
    cfg = dict(config.load_profile("smoke"), profile="toyrun", datasets=["toy"], n_train=6, n_test=4,
               conditions=["vanilla", "correct", "incorrect"], teacher=None)
    yield cfg
    qa.unregister("toy")


def test_registry_order_and_errors():
    assert qa.names()[:3] == qa.DATASETS == ("cotempqa", "marco", "babi")
    assert qa.get("babi").display_name == "bAbI"
    with pytest.raises(ValueError, match="unknown dataset 'squad'.*cotempqa"):
        qa.get("squad")
    with pytest.raises(ValueError, match="already registered"):
        qa.register(qa.get("marco"))
    with pytest.raises(ValueError, match=r"\{label\}"):
        qa.register(base.DatasetSpec(**{**TOY.__dict__, "name": "bad", "classification": "no label"}))


def test_a_toy_dataset_runs_through_every_stage(toy):
    cfg = toy
    assert qa.names()[-1] == "toy" and decompose.VARIANTS["toy"] == ["default", "last"]
    # 01: the generator, validated against the toy's labels; no rule applied
    out = data.prepare(cfg)
    interim = out["toy"]["train"]
    assert len(interim) == 6 and set(interim["category"]) == set(TOY_LABELS)
    assert "relevant" not in interim.columns
    # 02: the toy's classification and relevance rules
    summary = decompose.run(cfg)
    probs = decompose.load_problems("toyrun", "toy", "train")
    assert probs["label"].tolist() == [json.loads(m)["kind"] for m in probs["meta"]]
    assert probs["relevant"].tolist() == [[i for i, c in enumerate(ctx) if c.endswith("!")]
                                          for ctx in probs["context"]]
    assert all(len(r) == 1 for r in probs["relevant"]) and not probs["flags"].map(len).any()
    assert summary["datasets"]["toy"]["variant"] == "default"
    # 03: the toy's sentences and rendering; its labels for the corruption
    tr = traces.prepare_traces(cfg)["toy"]
    correct = traces.load_condition("toyrun", "toy", "correct")
    incorrect = traces.load_condition("toyrun", "toy", "incorrect")
    for r in correct.to_dict("records"):
        ctx = probs.set_index("id").loc[r["id"], "context"]
        assert " | ".join(ctx) in r["user"]
        facts = [ctx[i] for i in probs.set_index("id").loc[r["id"], "relevant"]]
        assert r["assistant"] == (f"<think>Toy kind: {r['gold_label']}.\nToy facts: {facts!r}</think> "
                                  f"<answer>{r['answers'][0].upper()}</answer>")
    for r in incorrect.to_dict("records"):  # two labels: the wrong one is the other one
        assert {r["trace_label"], r["gold_label"]} == set(TOY_LABELS)
        assert r["trace_relevant"] != r["gold_relevant"]
    assert config.read_json(tr["dir"] / "stamp.json")["labels"] == list(TOY_LABELS)
    # scoring: the correct targets score as right under the toy's scorer hooks
    gold = probs
    preds = correct[["id", "assistant"]].rename(columns={"assistant": "prediction"})
    items = scoring.score_items(preds, gold, dataset="toy", condition="correct", mode_compat_join="id")
    assert items["answer_em"].all() and items["cls_correct"].all() and items["ir_exact"].all()
    assert items["rouge_l"].notna().all()                   # rouge_l=True
    assert items["cls_correct_compat"].astype(bool).all()  # the label read from sentence 0
    # another rule: 02 re-runs, the traces follow, and 03 applied nothing itself
    cfg_last = dict(cfg, decomposition="last")
    with pytest.raises(FileNotFoundError, match="make decompose PROFILE=toyrun"):
        traces.load_problems(cfg_last, "toy", "train")
    decompose.run(cfg_last)
    last = traces.load_problems(cfg_last, "toy", "train")
    assert last["relevant"].tolist() == [[len(c) - 1] for c in last["context"]]


# ------------------------------------------------------------------------------ no branches
# A dataset's behaviour is a hook of its module: outside helpers/qa nothing tests a dataset's
# name (``if dataset == "babi"``, ``ds in ("marco", ...)``, ``x == "cotempqa"``).
BRANCH = re.compile(
    r"""\b(?:dataset|ds)\s*(?:==|!=)\s*["']"""                   # dataset == "babi"
    r"""|\b(?:dataset|ds)\s+(?:not\s+)?in\s*[(\[{]"""             # ds in ("marco", "babi")
    r"""|(?:==|!=)\s*["'](?:cotempqa|marco|babi)["']"""          # k[0] == "cotempqa"
    r"""|["'](?:cotempqa|marco|babi)["']\s*(?:==|!=|in\b)""")    # "babi" == dataset


def branches(root: Path) -> list[str]:
    hits = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith("qa/"):
            continue
        for k, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if BRANCH.search(code):
                hits.append(f"{rel}:{k}: {line.strip()}")
    return hits


def test_no_dataset_branches_outside_the_dataset_modules():
    assert branches(HELPERS) == []


def test_the_branch_check_finds_a_branch(tmp_path):
    (tmp_path / "x.py").write_text('if dataset == "babi":\n    pass\nok = ds in ("marco",)\n')
    (tmp_path / "qa").mkdir()
    (tmp_path / "qa" / "babi.py").write_text('if dataset == "babi":\n    pass\n')  # allowed there
    assert [h.split(":")[1] for h in branches(tmp_path)] == ["1", "3"]


def test_the_dataset_list_is_defined_once():
    defs = [f"{p.relative_to(HELPERS)}:{k}" for p in sorted(HELPERS.rglob("*.py"))
            for k, line in enumerate(p.read_text().splitlines(), 1)
            if re.match(r"\s*DATASETS\s*[:=]", line)]
    assert defs == ["qa/__init__.py:" + str(next(
        k for k, line in enumerate((HELPERS / "qa" / "__init__.py").read_text().splitlines(), 1)
        if line.startswith("DATASETS")))]
