"""The one table of conditions (helpers.conditions), the "add a condition" recipe end to end
(a toy condition through 03's builder, 04's grid, 05's scoring, 06's order and colours), and
the one-way 03 -> 04 -> 05 boundary (04 and 05 read 03's files and never run 03)."""
import ast
from pathlib import Path

import pandas as pd
import pytest

from helpers import conditions, config, decompose, evaluate, figures, krsl, paths, scoring, sft, stats, teacher, traces
from test_traces import COTEMP, FRAMES, SCHEMA

HELPERS = Path(conditions.__file__).resolve().parent


# ------------------------------------------------------------------ the table
def test_every_condition_with_a_builder_finds_it():
    for name in conditions.names():
        c = conditions.get(name)
        if c.builder is None:
            assert c.family == "untrained"
        else:
            assert callable(conditions.builder(name)), name
    assert conditions.builder("krsl") is krsl.build_pairs
    assert conditions.builder("teacher_swapped").__module__ == teacher.__name__


def test_views_of_the_table():
    assert conditions.names("base") == ("vanilla", "correct", "incorrect", "incorrect_class", "incorrect_ir",
                                        "shuffled")
    assert conditions.names("derived") == ("krsl",)
    assert conditions.get("krsl").derives_from == ("correct", "incorrect")
    assert conditions.names(test_set="teacher") == conditions.names(written_by="teacher")
    assert conditions.names(has_trace=True, steps_scored=False) == (
        "teacher", "teacher_summary", "teacher_posthoc", "teacher_swapped")
    assert conditions.get("incorrect").corrupts == ("label", "ir")
    assert conditions.get("tset_incorrect").corrupts == conditions.get("incorrect").corrupts
    # the order every table and figure uses, the baseline first
    assert conditions.names()[0] == conditions.UNTRAINED
    assert stats.CONDITION_ORDER == list(conditions.names())


def test_unknown_names_and_bad_rows_are_errors():
    with pytest.raises(conditions.UnknownCondition, match="unknown condition 'nope'"):
        conditions.get("nope")
    with pytest.raises(ValueError):  # an UnknownCondition is also a ValueError and a KeyError
        conditions.get("nope")
    assert conditions.find("unknown") is None and not scoring.has_trace_target("unknown")
    with pytest.raises(ValueError, match="already in the table"):
        conditions.register(conditions.get("correct"))
    with pytest.raises(ValueError, match="corrupts"):
        conditions.Condition("x", "base", has_trace=True, builder="trace", colour="#000000", order=1,
                             corrupts=("answer",))
    with pytest.raises(ValueError, match="derives_from"):
        conditions.Condition("x", "derived", has_trace=True, builder=None, colour="#000000", order=1)
    with pytest.raises(ValueError, match="unknown conditions"):
        conditions.register(name="x", family="tset", has_trace=True, builder="trace", colour="#000000",
                            order=1, derives_from=("nope",))
    assert "x" not in conditions.TABLE


def test_a_builder_that_nobody_registered_is_a_clear_error():
    conditions.register(name="orphan", family="base", has_trace=True, builder="nowhere", colour="#000000", order=99)
    try:
        with pytest.raises(LookupError, match="@conditions.builds"):
            traces.build_condition(COTEMP, "cotempqa", "orphan", 0)
    finally:
        conditions.unregister("orphan")


# ------------------------------------------------------------------ the recipe: a toy condition
TOY = "incorrect_class_last"
LABELS4 = ["equal", "overlap", "during", "mix"]


@pytest.fixture
def toy():
    """The recipe of docs/architecture.md: one table row and one builder."""

    @conditions.builds("last_other_label")
    def last_other_label(probs, ctx):
        """The correct trace with the label replaced by the last other label of the label set
        (a deterministic corruption of the classification step only)."""
        out = []
        for p in probs:
            t = ctx.gold(p)
            t["label"] = [l for l in ctx.labels if l.casefold() != p["category"].casefold()][-1]
            t["steps"].append("label")
            out.append(t)
        return out

    row = conditions.register(name=TOY, family="base", has_trace=True, steps_scored=True, corrupts=("label",),
                              builder="last_other_label", colour="#123456", order=5.5,
                              label="incorrect class (last label)")
    yield row
    conditions.unregister(TOY)
    conditions.BUILDERS.pop("last_other_label")


def test_toy_condition_is_built_by_its_builder(toy):
    out = traces.build_condition(COTEMP, "cotempqa", TOY, 0, labels=LABELS4)
    cor = traces.build_condition(COTEMP, "cotempqa", "correct", 0, labels=LABELS4)
    assert out["condition"].tolist() == [TOY, TOY]
    assert out["trace_label"].tolist() == ["mix", "mix"]  # gold: equal, during
    assert out["trace_facts"].tolist() == cor["trace_facts"].tolist()  # only the classification step changes
    assert out["corrupted_steps"].tolist() == [["label"], ["label"]]
    assert all(a.startswith("<think>") and "mix." in a for a in out["assistant"])
    assert out["user"].tolist() == cor["user"].tolist()
    # the original rendering takes the same builder
    orig = traces.build_condition(COTEMP, "cotempqa", TOY, 0, labels=LABELS4, rendering="original")
    assert orig["trace_label"].tolist() == ["mix", "mix"]


def test_toy_condition_goes_through_the_stages(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    cfg = dict(config.load_profile("smoke"), datasets=["babi"], conditions=["vanilla", TOY, "krsl"],
               teacher=None)
    decompose.write_problems(cfg, "babi", {split: FRAMES["babi"][SCHEMA] for split in ("train", "test")})
    # 03 writes its trace file (and the sets krsl derives from)
    assert traces.trained_conditions(cfg) == ["vanilla", TOY, "correct", "incorrect"]
    res = traces.prepare_traces(cfg)["babi"]
    written = traces.load_condition(cfg["profile"], "babi", TOY)
    assert res["summary"][TOY]["corrupted_steps"] == {"label": 2}
    assert written["condition"].eq(TOY).all()
    # 04 trains it with SFT (krsl aside), 05 evaluates it on the full test set
    assert [c for _, _, c, _ in sft.run_grid(cfg)] == ["vanilla", TOY]
    assert [c for _, _, c, _ in evaluate.runs(cfg)] == ["untrained", "vanilla", TOY, "krsl"]
    assert traces.test_set_of(TOY) == "full"
    assert sft.run_keys(TOY) == sft.run_keys("correct")  # no teacher keys
    # scoring: a trace target whose steps are scored
    gold = traces.load_test(cfg, "babi", TOY).rename(columns={"gold_label": "category",
                                                                  "gold_relevant": "relevant"})
    preds = pd.DataFrame({"id": gold["id"], "prediction": written["assistant"].tolist()})
    items = scoring.score_items(preds, gold, dataset="babi", condition=TOY)
    assert items["has_trace_target"].all() and items["trace_scored"].all()
    assert not items["cls_correct"].any() and items["ir_exact"].all()  # the label is wrong, the facts right


def test_toy_condition_has_its_place_and_colour_in_tables_and_figures(toy):
    present = ["shuffled", TOY, "untrained", "incorrect_ir", "incorrect_class", "vanilla", "zzz_unlisted"]
    items = pd.DataFrame({"condition": present})
    # table order: after incorrect_class (5), before incorrect_ir (6); names outside the table last
    want = ["untrained", "vanilla", "incorrect_class", TOY, "incorrect_ir", "shuffled", "zzz_unlisted"]
    assert stats.conditions_present(items) == want
    assert stats.sort_rows(pd.DataFrame({"condition": present[::-1], "seed": 0}))["condition"].tolist() == want
    assert figures.condition_color(TOY) == "#123456"
    assert conditions.label(TOY) == "incorrect class (last label)"
    assert conditions.label("untrained") == "untrained (baseline)"


# ------------------------------------------------------------------ one-way 03 -> 04 -> 05
@pytest.fixture
def empty_study(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    cfg = dict(config.load_profile("smoke"), profile="nothing03", datasets=["cotempqa"])
    d = paths.data_dir(cfg["profile"], "cotempqa")  # 01's files exist, 03's do not
    d.mkdir(parents=True)
    for split in ("train", "test"):
        FRAMES["cotempqa"][SCHEMA].to_parquet(d / f"{split}.parquet", index=False)

    def no_stage_03(*a, **k):
        raise AssertionError("a later stage ran 03's code")

    monkeypatch.setattr(traces, "prepare_traces", no_stage_03)
    return cfg


def test_sft_reads_03s_files_and_names_the_make_target(empty_study):
    cfg = empty_study
    with pytest.raises(paths.MissingInput, match=r"traces for nothing03/cotempqa/correct missing .* "
                                                 r"run make traces PROFILE=nothing03"):
        sft.train_run(cfg, "cotempqa", "tiny", "correct", 0, progress=False)
    assert not paths.run_dir("nothing03", "cotempqa", "tiny", "correct", 0).exists()  # nothing started


def test_krsl_reads_03s_files_and_names_the_make_target(empty_study):
    with pytest.raises(paths.MissingInput, match="make traces PROFILE=nothing03"):
        krsl.dataset_pairs(empty_study, "cotempqa", "tiny")


def test_evaluation_reads_03s_test_file_and_names_the_make_target(empty_study):
    from helpers import models

    tok = models.load_tokenizer("tiny")
    with pytest.raises(paths.MissingInput, match=r"full test set for nothing03/cotempqa missing .* make traces"):
        evaluate.test_prompts(empty_study, "cotempqa", "tiny", tok, "vanilla")


# ------------------------------------------------------------------ import direction
# stage ranks of the modules this refactor owns; an import must go to a lower or equal rank
RANK = {"conditions": 0, "traces": 1, "teacher": 2, "teacher_stage": 2, "sft": 3, "krsl": 3,
        "evaluate": 4, "stats": 5, "figures": 5}


def _imports(mod: str) -> set[str]:
    """helpers modules that ``mod`` imports anywhere (top level or inside functions)."""
    tree = ast.parse((HELPERS / f"{mod}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
            parts = node.module.split(".")
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("helpers.")}
    return out & (set(RANK) | {p.stem for p in HELPERS.glob("*.py")})


def test_conditions_is_a_leaf():
    assert _imports("conditions") == set()


@pytest.mark.parametrize("mod", sorted(RANK))
def test_no_import_of_a_later_stage(mod):
    later = {m for m in _imports(mod) if m in RANK and RANK[m] > RANK[mod]}
    assert not later, f"{mod} imports later stage(s) {sorted(later)}"


def test_no_cycle_among_the_stage_modules():
    graph = {m: _imports(m) & set(RANK) - {m} for m in RANK}
    for a in graph:
        for b in graph[a]:
            assert a not in graph.get(b, ()), f"{a} <-> {b}"
