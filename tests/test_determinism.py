"""Artifacts are the same when the work is the same: two clean runs of the smoke profile's
stages (in two temporary study folders) write byte-identical data, trace sets, adapters,
predictions and results. Compared: every file the stages write except the provenance records
beside the artifacts, which carry wall-clock times, paths and versions by design:
``stamp.json`` / ``predictions.stamp.json`` (their ``hash`` is compared instead),
``config.json``, ``metrics.json`` and ``log_history.json`` (timings, throughput),
``timings.json``, ``data_card.json`` (is compared) and training ``checkpoints/``."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import config, paths

PROVENANCE = {"stamp.json", "predictions.stamp.json", "config.json", "metrics.json",
              "log_history.json", "timings.json"}


def _clean_run(root: Path, monkeypatch) -> Path:
    from helpers import data, decompose, evaluate, krsl, sft, teacher_stage, traces

    for name in ("DATA", "RUNS", "RESULTS"):
        monkeypatch.setattr(paths, name, root / name.lower())
    cfg = dict(config.load_profile("smoke"), datasets=["cotempqa", "babi"], conditions=["correct", "incorrect", "krsl"],
               models=["tiny"], seeds=[0], max_steps=2, krsl_max_steps=2, n_train=12, n_test=4,
               max_new_tokens=8, eval_untrained=False)  # the smoke profile's synthetic teacher
    data.prepare(cfg)
    decompose.run(cfg)
    traces.prepare_traces(cfg)
    teacher_stage.prepare_teacher(cfg)
    sft.train_all(cfg, progress=False, inner_progress=False)
    krsl.train_all(cfg, progress=False, inner_progress=False)
    evaluate.evaluate_all(cfg, progress=False)
    return root


def _artifacts(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p.name not in PROVENANCE and "checkpoints" not in rel.parts:
            out[rel.as_posix()] = p.read_bytes()
    return out


def _stamp_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): json.loads(p.read_text())["hash"]
            for p in sorted(root.rglob("*stamp.json")) if "checkpoints" not in p.parts
            and "hash" in json.loads(p.read_text())}


def test_two_clean_runs_write_the_same_bytes(tmp_path, monkeypatch):
    a = _clean_run(tmp_path / "a", monkeypatch)
    b = _clean_run(tmp_path / "b", monkeypatch)
    fa, fb = _artifacts(a), _artifacts(b)
    kinds = {k.split("/")[-1] for k in fa}
    assert {"train.parquet", "correct_train.parquet", "adapter_model.safetensors", "adapter_config.json",
            "predictions.jsonl", "items.parquet"} <= kinds
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == []
    # the stamps record the same work (their provenance differs: times)
    ha, hb = _stamp_hashes(a), _stamp_hashes(b)
    assert len(ha) >= 2 + 2 + 2 + 8 + 8 and ha == hb
    # the reasons the bytes agree, checked directly (they may agree by chance within a process)
    adapters = [p for p in a.rglob("adapter_config.json") if "checkpoints" not in p.parts]
    assert len(adapters) == 8
    for p in adapters:
        tm = json.loads(p.read_text())["target_modules"]
        assert tm == sorted(tm)
    for p in a.rglob("predictions.jsonl"):
        recs = [json.loads(x) for x in p.read_text().splitlines()]
        assert recs and not any("seconds" in r for r in recs)
        assert set(json.loads((p.parent / "timings.json").read_text())["seconds"]) == {r["id"] for r in recs}


def test_items_file_order_does_not_depend_on_merge_order(tmp_path):
    import pandas as pd

    from helpers import scoring

    def run(cond, seed, n=3):
        rows = []
        for i in range(n):
            r = {c: None for c in scoring.ALL_ITEM_COLUMNS}
            r.update(dataset="babi", model="tiny", condition=cond, seed=seed, id=f"q{i}", category="x")
            rows.append(r)
        return pd.DataFrame(rows, columns=scoring.ALL_ITEM_COLUMNS)

    runs = [run("vanilla", 0), run("correct", 10), run("correct", 2), run("incorrect", 0)]
    p1, p2 = tmp_path / "1.parquet", tmp_path / "2.parquet"
    for r in runs:
        scoring.update_items_file(p1, r)
    for r in reversed(runs):
        scoring.update_items_file(p2, r)
    scoring.update_items_file(p2, runs[1])  # a run replaced: same place
    assert p1.read_bytes() == p2.read_bytes()
    got = pd.read_parquet(p1)
    assert list(zip(got["condition"], got["seed"]))[::3] == [("correct", 2), ("correct", 10), ("incorrect", 0),
                                                           ("vanilla", 0)]
    assert got["id"].tolist()[:3] == ["q0", "q1", "q2"]
