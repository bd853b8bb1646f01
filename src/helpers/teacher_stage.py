"""The reasoning-teacher stage and its analysis: the glue between
:mod:`helpers.teacher` (backends, cache, derived sets) and the notebooks.

The stage is the last section of ``03_traces``; it runs only when the profile names a
``teacher`` (``teacher: null`` turns it off, and then nothing here is called or written).
For every dataset it reads the problems of 01 (with 02's relevant-fact rule,
:func:`helpers.traces.load_problems`) and writes, under ``data/<profile>/<dataset>/``:

``teacher/calls.jsonl``           the call cache of the teacher (API / local backends; resumable)
``teacher/failures.jsonl``        failed calls, for diagnosis (never read back)
``teacher/summary_calls.jsonl``   the summariser's cache; ``posthoc_calls.jsonl`` the post-hoc one
``teacher/synthetic.jsonl``       ``path: synthetic`` only: the stand-in teacher's trace file
``teacher/teacher.parquet``       one row per train and test problem: status, trace, answer,
                                  EM / F1 with the dataset's scorer, tokens, cost
``teacher/teacher_set.parquet``   the problems the teacher answered correctly, split again per
                                  category (``split``; the earlier split in ``split_before``),
                                  with the summary / post-hoc texts and their status
``teacher/stamp.json``            config (the teacher spec; an API key is never recorded, only
                                  the name of its variable), run statistics, counts
``traces/<condition>_train.*``    the training sets of the teacher-family conditions
``traces/teacher_test.*``         the teacher set's test prompts (every teacher-family run's test)

The training problems of every teacher-family condition are the teacher set's training split
less the problems whose summary or post-hoc explanation failed (when those conditions are
trained), so the conditions differ only in the think text. Dropped problems are counted per
failure class in the stamp. A stage with transport failures (not cached) is never skipped as
fresh: running it again retries exactly those calls and answers the rest from the cache.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from . import conditions, config, paths, qa, teacher as TC, traces
from .progress import over

# The profile keys of the teacher comparison (flat, in every profile and parameters cell).
TEACHER_KEYS = ["teacher", "teacher_summariser", "teacher_conditions", "teacher_resplit_seed",
                "teacher_test_frac", "teacher_max_cost_usd", "teacher_system"]
# What the stage's outputs depend on (its stamp): the data and trace keys, and the teacher's.
STAGE_KEYS = [k for k in traces.TRACE_KEYS if k != "conditions"] + TEACHER_KEYS
SYNTHETIC = "synthetic"  # ``{backend: file, path: synthetic}``: the stand-in teacher (not a model)

def teacher_dir(profile: str, dataset: str) -> Path:
    return paths.data_dir(profile, dataset) / "teacher"


def enabled(cfg: Mapping[str, Any]) -> bool:
    return bool(cfg.get("teacher"))


def is_synthetic(spec: Mapping[str, Any] | None) -> bool:
    return bool(spec) and spec.get("backend") == "file" and str(spec.get("path")) == SYNTHETIC


def describe_spec(spec: Mapping[str, Any] | None) -> str:
    """One line naming a backend spec (for tables; no secret is ever in a spec)."""
    if not spec:
        return "off"
    if is_synthetic(spec):
        return "synthetic stand-in teacher (not a model), file backend"
    kind = spec.get("backend")
    if kind == "file":
        return f"file {spec.get('path')}"
    where = f" at {spec['base_url']}" if kind == "api" and spec.get("base_url") else ""
    return f"{kind} {spec.get('model')}{where}"


def _backend(spec: Mapping[str, Any], dataset: str, problems: pd.DataFrame, folder: Path,
             seed: int) -> TC.Backend:
    """The backend of ``spec``; ``path: synthetic`` first writes the stand-in teacher's trace
    file for ``problems`` and then reads it back through the file backend (the pipeline's
    file path is the one exercised)."""
    if is_synthetic(spec):
        f = TC.write_trace_file(TC.synthetic_teacher(problems, dataset, seed=seed), folder / "synthetic.jsonl")
        return TC.FileBackend(f)
    return TC.make_backend(spec, dataset)


def _stats_dict(stats: TC.RunStats, backend: TC.Backend) -> dict[str, Any]:
    d = stats.as_dict()
    d["backend"] = backend.describe()
    if isinstance(backend, TC.FileBackend):
        d["line_problems"] = dict(backend.line_problems)
    return d


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    traces._write_parquet(frame, path)
    traces._write_jsonl(frame, path.with_suffix(".jsonl"))


def stage_inputs(cfg: Mapping[str, Any], dataset: str) -> dict[str, Path]:
    """The files the stage reads for ``dataset`` (its stamp hashes their content): the data
    stage's splits, and a teacher (or summariser) trace file given by ``path``."""
    out = dict(traces.data_inputs(cfg, dataset))
    for key in ("teacher", "teacher_summariser"):
        spec = cfg.get(key)
        if isinstance(spec, Mapping) and spec.get("backend") == "file" and not is_synthetic(spec):
            path = str(spec.get("path")).replace("{dataset}", dataset)
            out[f"{key}:{path}"] = Path(path)
    return out


def prepare_teacher(cfg: Mapping[str, Any], force: bool = False, *, progress: bool = False) -> dict[str, Any]:
    """Run the teacher stage for every dataset of ``cfg`` (module docstring); ``{}`` when the
    profile names no teacher. Skipped per dataset when its stamp matches :data:`STAGE_KEYS`
    and the files exist (unless ``force``); an API run that is redone answers from its cache.

    Returns ``{dataset: {"dir", "skipped", "summary"}}``, ``summary`` as in the stamp."""
    if not enabled(cfg):
        return {}
    conds = traces.teacher_conditions(cfg)
    spec = dict(cfg["teacher"])
    sspec = dict(cfg.get("teacher_summariser") or spec)
    seed = int(cfg.get("teacher_resplit_seed", TC.RESPLIT_SEED))
    frac = float(cfg.get("teacher_test_frac", TC.RESPLIT_TEST_FRAC))
    budget = cfg.get("teacher_max_cost_usd")
    system = cfg.get("teacher_system")
    rendering = traces.T.check_rendering(cfg.get("rendering"))
    out: dict[str, Any] = {}
    for ds in over(list(cfg["datasets"]), "teacher stage", progress):
        d = teacher_dir(cfg["profile"], ds)
        files = [d / "teacher.parquet", d / "teacher_set.parquet",
                 traces.teacher_test_path(cfg["profile"], ds),
                 *(traces.train_path(cfg["profile"], ds, c) for c in conds)]
        inputs = stage_inputs(cfg, ds)
        if (not force and config.is_fresh(d, cfg, STAGE_KEYS, stage="teacher", inputs=inputs)
                and all(p.exists() for p in files)
                and not config.read_json(d / config.STAMP)["summary"].get("transport_failures")):
            out[ds] = {"dir": d, "skipped": True, "summary": config.read_json(d / config.STAMP)["summary"]}
            continue
        d.mkdir(parents=True, exist_ok=True)
        (d / config.STAMP).unlink(missing_ok=True)
        probs = pd.concat([traces.load_problems(cfg, ds, "train"), traces.load_problems(cfg, ds, "test")],
                          ignore_index=True)
        summ: dict[str, Any] = {"synthetic": is_synthetic(spec), "teacher": describe_spec(spec),
                                "summariser": describe_spec(sspec), "conditions": conds}
        # 1. the teacher on train + test
        backend = _backend(spec, ds, probs, d, int(cfg.get("trace_seed", 0)))
        rows, st = TC.run_teacher(probs, ds, backend, d / "calls.jsonl", system=system,
                                  failure_log=d / "failures.jsonl", max_cost_usd=budget)
        summ["teacher_run"] = _stats_dict(st, backend)
        # 2. scoring, the teacher set, the per-category resplit
        scored = TC.score_teacher(probs, rows, ds)
        keep = ["prompt_tokens", "completion_tokens", "reasoning_tokens", "cost_usd", "cached"]
        scored_out = scored.merge(rows[["id"] + keep], on="id", how="left")
        traces._write_parquet(scored_out, d / "teacher.parquet")
        summ["accuracy"] = TC.teacher_accuracy(scored).to_dict("records")
        tset = TC.resplit(TC.teacher_set(scored), test_frac=frac, seed=seed)
        train = tset[tset["split"] == "train"].reset_index(drop=True)
        # 3. summaries and post-hoc explanations of the training split, as the conditions need
        dropped: dict[str, dict[str, int]] = {}
        ok = pd.Series(True, index=train.index)
        tset["teacher_summary"] = None
        tset["teacher_posthoc"] = None
        if "teacher_summary" in conds:
            sb = backend if sspec == spec else _backend(sspec, ds, probs, d, int(cfg.get("trace_seed", 0)))
            srows, sst = TC.run_summaries(train.rename(columns={"teacher_trace": "trace"}), sb,
                                          d / "summary_calls.jsonl", dataset=ds,
                                          failure_log=d / "failures.jsonl", max_cost_usd=budget)
            summ["summary_run"] = _stats_dict(sst, sb)
            train["teacher_summary"] = srows["text"].where(srows["status"] == TC.STATUS_OK, None).tolist()
            bad = srows["status"] != TC.STATUS_OK
            dropped["summary"] = {k: int(v) for k, v in srows.loc[bad, "status"].value_counts().items()}
            ok &= ~bad.to_numpy()
        if "teacher_posthoc" in conds:
            prows, pst = TC.run_posthoc(train, ds, backend, d / "posthoc_calls.jsonl", system=system,
                                        failure_log=d / "failures.jsonl", max_cost_usd=budget)
            summ["posthoc_run"] = _stats_dict(pst, backend)
            train["teacher_posthoc"] = prows["text"].where(prows["status"] == TC.STATUS_OK, None).tolist()
            bad = prows["status"] != TC.STATUS_OK
            dropped["posthoc"] = {k: int(v) for k, v in prows.loc[bad, "status"].value_counts().items()}
            ok &= ~bad.to_numpy()
        for col in ("teacher_summary", "teacher_posthoc"):
            if col in train.columns:
                tset.loc[tset["split"] == "train", col] = train[col].tolist()
        traces._write_parquet(tset, d / "teacher_set.parquet")
        kept = train[ok.to_numpy()].reset_index(drop=True)
        test = tset[tset["split"] == "test"].reset_index(drop=True)
        summ["counts"] = {"problems": len(probs), "teacher_ok": int((scored["teacher_status"] == TC.STATUS_OK).sum()),
                          "teacher_set": len(tset), "train": len(train), "test": len(test),
                          "train_kept": len(kept), "dropped": dropped}
        if conds and (len(kept) < 2 or len(test) < 1):
            raise ValueError(f"{ds}: the teacher set leaves {len(kept)} training and {len(test)} test problems; "
                             "the teacher-family conditions need at least 2 and 1 (see the stamp's counts)")
        # 4. the trace files of the teacher-family conditions
        labels = traces.labels_for(cfg, ds)
        csumm = {}
        for c in conds:
            if conditions.get(c).family == "tset":  # a base condition's builder on the teacher set
                frame = traces.build_condition(kept, ds, c, int(cfg["trace_seed"]), labels=labels,
                                               rendering=rendering)
            else:
                frame = conditions.builder(c)(kept, ds, c, seed=int(cfg["trace_seed"]))
                # the student's user turn as in every other condition of this rendering
                frame["user"] = [traces.T.render_user(ds, [str(x) for x in traces.as_list(r["context"])],
                                                      str(r["question"]), rendering, "train")
                                 for r in kept.to_dict("records")]
            _write(frame, traces.train_path(cfg["profile"], ds, c))
            csumm[c] = traces.summary(frame)
        summ["trace_sets"] = csumm
        # 5. the teacher set's test prompts
        _write(traces.build_test(test, ds, rendering), traces.teacher_test_path(cfg["profile"], ds))
        # calls that failed in transport (429 after every retry, timeouts, ...) were not cached:
        # a stage with any is never "fresh", so running it again retries exactly those
        summ["transport_failures"] = sum(int(n) for k in ("teacher_run", "summary_run", "posthoc_run") if k in summ
                                         for st, n in summ[k]["status"].items() if st in TC.TRANSPORT_FAILURES)
        cites = TC.fact_citation(tset)
        summ["citation"] = TC.citation_summary(cites).to_dict("records")
        config.write_stamp(d, cfg, STAGE_KEYS, stage="teacher", inputs=inputs, summary=summ)
        out[ds] = {"dir": d, "skipped": False, "summary": config.read_json(d / config.STAMP)["summary"]}
    return out


# --------------------------------------------------------------------------------------
# views for 03_traces
# --------------------------------------------------------------------------------------
def overview(stage: Mapping[str, Any]) -> pd.DataFrame:
    """One row per dataset: the teacher, its calls and failure classes, the teacher set and
    its split, the problems dropped for a failed summary / explanation."""
    rows = []
    for ds, e in stage.items():
        s = e["summary"]
        run, c = s["teacher_run"], s["counts"]
        rows.append({"dataset": ds, "teacher": s["teacher"] + (" [SYNTHETIC]" if s["synthetic"] else ""),
                     "problems": c["problems"], "status": ", ".join(f"{k} {v}" for k, v in run["status"].items()),
                     "cached": run["cached"], "new calls": run["called"],
                     "tokens (prompt / completion)": f"{run['prompt_tokens']} / {run['completion_tokens']}",
                     "cost USD (new calls)": run["cost_usd"], "teacher set": c["teacher_set"],
                     "train / test": f"{c['train']} / {c['test']}", "train kept": c["train_kept"],
                     "dropped": json.dumps(c["dropped"]) if c["dropped"] else "", "skipped (fresh)": e["skipped"]})
    return pd.DataFrame(rows)


def accuracy_table(stage: Mapping[str, Any]) -> pd.DataFrame:
    """Teacher EM per dataset and category (percent), the original's DeepSeek-R1 EM beside
    CoTempQA's categories."""
    rows = []
    for ds, e in stage.items():
        for r in e["summary"]["accuracy"]:
            ref = qa.get(ds).reference_teacher_em.get(r["category"])
            rows.append({"dataset": ds, "category": r["category"], "n": r["n"], "answered": r["answered"],
                         "teacher EM %": round(100 * r["em"], 1), "original R1 EM %": ref})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# analysis for 06_correlation
# --------------------------------------------------------------------------------------
def teacher_items(items: pd.DataFrame) -> pd.DataFrame:
    """The items answered on the teacher set's test split (``test_set == "teacher"``)."""
    if "test_set" not in items.columns:
        return items.iloc[0:0]
    return items[items["test_set"] == "teacher"]


def accuracy_on_teacher_set(items: pd.DataFrame) -> pd.DataFrame:
    """Answer EM and F1 (percent) of every teacher-family condition on the teacher test set,
    per dataset, model and category (and ``all``), means over items and seeds, with the
    original's reference EM beside CoTempQA's categories (``original EM %``)."""
    t = teacher_items(items)
    cols = ["dataset", "model", "condition", "category", "n", "answer EM %", "answer F1 %", "original EM %"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    parts = [t, t.assign(category="all")]
    g = (pd.concat(parts, ignore_index=True).groupby(["dataset", "model", "condition", "category"], sort=False)
         .agg(n=("id", "size"), em=("answer_em", "mean"), f1=("answer_f1", "mean")).reset_index())
    g["answer EM %"] = (100 * g.pop("em")).round(1)
    g["answer F1 %"] = (100 * g.pop("f1")).round(1)
    g["original EM %"] = [qa.get(ds).reference_student_em.get(c, {}).get(cat)
                          for ds, c, cat in zip(g["dataset"], g["condition"], g["category"])]
    g = (g.assign(_c=g["condition"].map(conditions.rank), _all=g["category"] == "all")  # "all" last
         .sort_values(["dataset", "model", "_c", "_all", "category"]).reset_index(drop=True))
    return g[cols]


def trace_sets(cfg: Mapping[str, Any], dataset: str) -> dict[str, pd.DataFrame]:
    """The written training sets of the profile's teacher-family conditions."""
    return {c: traces.load_condition(cfg["profile"], dataset, c) for c in traces.teacher_conditions(cfg)}


def trace_lengths(cfg: Mapping[str, Any], model_name: str) -> pd.DataFrame:
    """Training-target length in the student's tokens per teacher-family condition
    (:func:`helpers.traces.length_stats` on the written sets, whole example rendered with
    ``model_name``'s template), and the think text alone (``think_tokens``: mean)."""
    from . import models

    frames = {}
    for ds in cfg["datasets"]:
        for c, fr in trace_sets(cfg, ds).items():
            frames.setdefault(c, []).append(fr)
    if not frames:
        return pd.DataFrame()
    frames = {c: pd.concat(v, ignore_index=True) for c, v in frames.items()}
    lens = traces.token_lengths(frames, model_name)
    out = traces.length_stats(lens, max_length=int(cfg["max_length"]))
    tok = models.load_tokenizer(model_name)
    think = []
    for c, fr in frames.items():
        for ds, g in fr.groupby("dataset", sort=False):
            n = [len(tok(_think(a), add_special_tokens=False)["input_ids"]) for a in g["assistant"]]
            think.append({"dataset": ds, "condition": c, "think_tokens": round(sum(n) / max(len(n), 1), 1)})
    return out.merge(pd.DataFrame(think), on=["dataset", "condition"], how="left").assign(model=model_name)


def _think(assistant: str) -> str:
    a = str(assistant)
    o, c = a.find(traces.T.THINK_OPEN), a.find(traces.T.THINK_CLOSE)
    return a[o + len(traces.T.THINK_OPEN):c] if o >= 0 and c > o else ""


def citation(cfg: Mapping[str, Any]) -> pd.DataFrame:
    """How often the teacher's own trace quotes the relevant facts verbatim
    (:func:`helpers.teacher.fact_citation`), per dataset and category, over the teacher set
    (``teacher_set.parquet``); ``checkable`` says where the proxy means something."""
    rows = []
    for ds in cfg["datasets"]:
        p = teacher_dir(cfg["profile"], ds) / "teacher_set.parquet"
        if not p.exists():
            continue
        s = TC.citation_summary(TC.fact_citation(pd.read_parquet(p)))
        rows.append(s.assign(dataset=ds, checkable=qa.get(ds).citation_checkable))
    if not rows:
        return pd.DataFrame()
    out = pd.concat(rows, ignore_index=True)
    return out[["dataset", "category", "n", "mean_share", "all_cited", "checkable"]]


def stamps(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The stage's stamp summary per dataset (what 06 labels: the teacher, synthetic or not)."""
    out = {}
    for ds in cfg["datasets"]:
        p = teacher_dir(cfg["profile"], ds) / config.STAMP
        if p.exists():
            out[ds] = config.read_json(p)["summary"]
    return out
