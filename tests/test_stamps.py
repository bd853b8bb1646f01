"""Stamps see code and inputs (helpers.config): a stage is recomputed when its config keys, the
source of the helpers modules it depends on (config.STAGE_MODULES) or the content of the files
it read change, and only then. Code edits are made in a COPY of the package that the hasher is
pointed at (config.SOURCE_DIR); the real files are never touched."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import dataclasses

from helpers import config, data, decompose, paths, qa, traces

HELPERS = Path(config.__file__).resolve().parent
OLD_IR = "I need to use the following facts to answer the question: {facts}"
NEW_IR = "These facts answer the question: {facts}"


@pytest.fixture
def src_copy(tmp_path, monkeypatch):
    """A copy of the helpers package, which the stamp hasher reads instead of the real one."""
    copy = tmp_path / "helpers_copy"
    shutil.copytree(HELPERS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(config, "SOURCE_DIR", copy)
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def _changed(before: dict, after: dict) -> set[str]:
    return {s for s in before if before[s] != after[s]}


def test_code_hashes_follow_each_stages_modules(src_copy):
    stages = list(config.STAGE_MODULES)
    base = {s: config.code_hashes(s) for s in stages}
    assert base == {s: config.code_hashes(s) for s in stages}  # stable
    assert all("bench.py" not in h and "figures.py" not in h for h in base.values())
    # a trace sentence (in its dataset module): the trace stages only; 01 and 02 hash the dataset
    # modules without the sentences (config.SOURCE_EXCLUDES), the later stages key on the trace
    # files' content (tests below)
    _edit(src_copy / "qa" / "cotempqa.py", OLD_IR, NEW_IR)
    after = {s: config.code_hashes(s) for s in stages}
    assert _changed(base, after) == {"traces", "teacher"}
    # ... while any other edit of a dataset module (a rule, a loader) re-runs 01 and 02 too
    base = after
    _edit(src_copy / "qa" / "cotempqa.py", "\nRETRIEVAL = ", "\nOTHER_RULE = 1\nRETRIEVAL = ")
    after = {s: config.code_hashes(s) for s in stages}
    assert _changed(base, after) == {"data", "decompose", "traces", "teacher"}
    # the generic prompt text: the trace stage and everything that renders or trains on traces
    base = after
    (src_copy / "templates.py").write_text((src_copy / "templates.py").read_text() + "\n# edited\n")
    after = {s: config.code_hashes(s) for s in stages}
    assert _changed(base, after) == {"traces", "teacher", "sft", "krsl", "eval"}
    # the speed engine (a subpackage): the stages that generate or train
    base = after
    (src_copy / "engine" / "training.py").write_text((src_copy / "engine" / "training.py").read_text() + "\n# x\n")
    after = {s: config.code_hashes(s) for s in stages}
    assert _changed(base, after) == {"teacher", "sft", "krsl", "eval"}
    # modules no stage uses re-run nothing (the benchmark is outside the package: benchmarks/)
    base = after
    (src_copy / "figures.py").write_text((src_copy / "figures.py").read_text() + "\n# edited\n")
    after = {s: config.code_hashes(s) for s in stages}
    assert after == base
    # how the rules are applied (02): 02 and the stages after it that hash it, not 01
    (src_copy / "decompose.py").write_text((src_copy / "decompose.py").read_text() + "\n# a new rule\n")
    after = {s: config.code_hashes(s) for s in stages}
    assert _changed(base, after) == {"decompose", "traces", "teacher"}
    # a module named in STAGE_MODULES that does not exist is an error, not a silent skip
    (src_copy / "hub.py").unlink()
    with pytest.raises(FileNotFoundError, match="hub"):
        config.code_hashes("data")


def test_fingerprint_covers_config_code_and_inputs(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    cfg = {"lr": 1, "steps": 2}
    fp = config.fingerprint(cfg, ["lr"], stage="traces", inputs={"in": f})
    config.write_stamp(tmp_path, cfg, ["lr"], stage="traces", inputs={"in": f}, summary={"n": 1})
    st = config.read_json(tmp_path / config.STAMP)
    assert st["hash"] == fp["hash"] and st["inputs"] == {"in": config.input_hashes([f])[str(f)]}
    assert set(st["code"]) == {"traces.py", "conditions.py", "templates.py", "decompose.py", "scoring.py",
                               "qa/__init__.py", "qa/base.py", "qa/babi.py", "qa/cotempqa.py", "qa/marco.py"}
    kw = dict(stage="traces", inputs={"in": f})
    assert config.is_fresh(tmp_path, dict(cfg, steps=3), ["lr"], **kw)      # a key not used
    assert not config.is_fresh(tmp_path, dict(cfg, lr=2), ["lr"], **kw)     # a key used
    assert not config.is_fresh(tmp_path, cfg, ["lr"], stage="sft", inputs={"in": f})  # other code
    f.write_text("b")
    assert not config.is_fresh(tmp_path, cfg, ["lr"], **kw)                 # other input bytes
    f.write_text("a")
    assert config.is_fresh(tmp_path, cfg, ["lr"], **kw)
    f.unlink()
    assert not config.is_fresh(tmp_path, cfg, ["lr"], **kw)                 # a missing input


# ---------------------------------------------------------------------------- the pipeline

@pytest.fixture
def study(tmp_path, monkeypatch):
    for name in ("DATA", "RUNS", "RESULTS"):
        monkeypatch.setattr(paths, name, tmp_path / name.lower())
    cfg = dict(config.load_profile("smoke"), datasets=["cotempqa"], conditions=["correct"], models=["tiny"],
               seeds=[0], max_steps=2, n_train=8, n_test=4, max_new_tokens=8, teacher=None)
    return cfg


def _run_all(cfg):
    """data -> traces -> one SFT run -> its evaluation; the stamps' bytes afterwards."""
    from helpers import evaluate, sft

    data.prepare(cfg)
    decompose.run(cfg)
    tr = traces.prepare_traces(cfg)
    rd = sft.train_run(cfg, "cotempqa", "tiny", "correct", 0, progress=False)
    evaluate.evaluate_run(cfg, "cotempqa", "tiny", "correct", 0, progress=False)
    return {"data": (paths.data_dir(cfg["profile"], "cotempqa") / config.STAMP).read_bytes(),
            "interim": (paths.data_dir(cfg["profile"], "cotempqa") / "train.parquet").read_bytes(),
            "problems": decompose.problems_path(cfg["profile"], "cotempqa", "train").read_bytes(),
            "decompose": (decompose.problems_dir(cfg["profile"], "cotempqa") / config.STAMP).read_bytes(),
            "traces": (tr["cotempqa"]["dir"] / config.STAMP).read_bytes(),
            "sft": (rd / config.STAMP).read_bytes(),
            "eval": (rd / evaluate.PRED_STAMP).read_bytes(),
            "traces_skipped": tr["cotempqa"]["skipped"],
            "predictions": (rd / "predictions.jsonl").stat().st_mtime_ns}


def test_a_template_edit_recomputes_the_trace_stage_and_what_follows(study, src_copy, monkeypatch):
    cfg = study
    first = _run_all(cfg)
    assert not first["traces_skipped"]
    # nothing changed: every stage is fresh (stamps untouched, no regeneration)
    again = _run_all(cfg)
    assert again == dict(first, traces_skipped=True)
    # the CoTempQA IR sentence edited (in the copy the hasher reads, and in the running registry)
    _edit(src_copy / "qa" / "cotempqa.py", OLD_IR, NEW_IR)
    monkeypatch.setitem(qa._REGISTRY, "cotempqa", dataclasses.replace(qa.get("cotempqa"), retrieval=NEW_IR))
    edited = _run_all(cfg)
    # exactly 03 and what follows: 01 and 02 stay fresh (their stamps untouched, same problems)
    assert edited["data"] == first["data"] and edited["decompose"] == first["decompose"]
    assert edited["interim"] == first["interim"] and edited["problems"] == first["problems"]
    assert not edited["traces_skipped"]
    assert {k for k in ("traces", "sft", "eval", "predictions") if edited[k] == first[k]} == set()
    train = traces.load_condition(cfg["profile"], "cotempqa", "correct")
    assert train["assistant"].str.contains("These facts answer the question").all()
    # and fresh again afterwards
    assert _run_all(cfg) == dict(edited, traces_skipped=True)
    # other weights alone (lr is no key of the evaluation): the predictions are made again
    other = _run_all(dict(cfg, lr=1e-3))
    assert other["sft"] != edited["sft"] and other["eval"] != edited["eval"]
    assert other["predictions"] != edited["predictions"] and other["traces"] == edited["traces"]


# ----------------------------------------------------------------------- local input files

def _write_cotempqa(root: Path, answer: str = "Redfield Labs") -> Path:
    d = root / "cotempqa"
    d.mkdir(parents=True, exist_ok=True)
    for s in ("equal", "overlap", "during", "mix"):
        with open(d / f"{s}.json", "w") as f:
            for i in range(6):
                f.write(json.dumps({
                    "index": i, "triple_element": "S1_R1_O2",
                    "question": f"While Ada{i} worked for Ashford Bank, which employer did Ada{i} work for?",
                    "facts": [f"Ada{i} works for {answer} from 1990 to 1995.",
                              f"Ada{i} works for Ashford Bank from 1991 to 1993."],
                    "answer": [answer]}) + "\n")
    return root


def test_an_edited_input_file_recomputes_the_data_stage(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA", tmp_path / "data")
    root = _write_cotempqa(tmp_path / "local")
    cfg = dict(config.load_profile("smoke"), profile="t", datasets=["cotempqa"], data_source="local",
               data_dir=str(root), n_train=None, n_test=None)
    out = data.prepare(cfg)
    assert set(out["cotempqa"]["train"]["answers"].map(tuple)) == {("Redfield Labs",)}
    stamp = config.read_json(paths.data_dir("t", "cotempqa") / config.STAMP)
    assert sorted(stamp["inputs"]) == [f"cotempqa/{s}.json" for s in ("during", "equal", "mix", "overlap")]
    # fresh: the loader is not called; a file the loader does not read changes nothing
    real_loader = data.load_dataset_source
    monkeypatch.setattr(data, "load_dataset_source", lambda *a, **k: pytest.fail("not skipped"))
    (root / "cotempqa" / "README.txt").write_text("notes")
    data.prepare(cfg)
    # the same folder, other bytes in a file it reads: recomputed
    _write_cotempqa(tmp_path / "local", answer="Ashford Bank")
    with pytest.raises(BaseException, match="not skipped"):
        data.prepare(cfg)
    monkeypatch.setattr(data, "load_dataset_source", real_loader)
    out = data.prepare(cfg)
    assert set(out["cotempqa"]["train"]["answers"].map(tuple)) == {("Ashford Bank",)}
    on_disk = pd.read_parquet(paths.data_dir("t", "cotempqa") / "train.parquet")
    assert {tuple(a) for a in on_disk["answers"]} == {("Ashford Bank",)}
