"""Evaluation: generate with every run on its test split, then score answers and traces.

One *run* is (dataset, model, condition, seed); the untrained student is the condition
``untrained`` (the base model, prompted the same way). Predictions go to the run's
``predictions.jsonl`` as they are made (:mod:`helpers.generate`), so an interrupted
evaluation resumes; scores are recomputed from the predictions every time (cheap), so a
changed scoring rule needs no regeneration. All runs' per-item scores are collected in
``results/<profile>/items.parquet``.
"""
from __future__ import annotations

import gc
from typing import Any, Mapping

import pandas as pd

from . import conditions, config, paths, traces
from .generate import generate_predictions, prompt_hash, read_predictions, timings_path

UNTRAINED = conditions.UNTRAINED
# A run's predictions.jsonl is stamped in predictions.stamp.json (written before generation
# starts, so an interrupted run resumes): these config keys, the eval stage's code
# (helpers.config.STAGE_MODULES["eval"]) and the content of the weights and the test file.
# Another stamp: the old predictions are dropped and the run is generated again.
EVAL_KEYS = ["max_new_tokens", "eval_batch_size", "engine"]
PRED_STAMP = "predictions.stamp.json"


def runs(cfg: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    """Every (dataset, model, condition, seed) the profile evaluates, baseline first."""
    out = []
    for ds in cfg["datasets"]:
        for m in cfg["models"]:
            if cfg.get("eval_untrained", True):
                out.append((ds, m, UNTRAINED, int(cfg["seeds"][0])))
            for cond in traces.all_conditions(cfg):
                for s in cfg["seeds"]:
                    out.append((ds, m, cond, int(s)))
    return out


def test_prompts(cfg: Mapping[str, Any], dataset: str, model_name: str, tok,
                 condition: str = UNTRAINED) -> list[dict[str, str]]:
    """The test split of ``condition`` (:func:`helpers.traces.test_path_for`: the teacher
    family answers the teacher set's test split) rendered as generation prompts for
    ``model_name`` (system + user, with the generation prompt), in the same template the
    student was trained with."""
    from . import chat, models

    test = traces.load_test(cfg, dataset, condition)  # 03's file; missing: `make traces`
    family = models.model_family(model_name)
    return [{"id": r["id"], "prompt": chat.render_prompt(tok, traces.messages(r, model_name, with_assistant=False), family)}
            for r in test.to_dict("records")]


def eval_inputs(cfg: Mapping[str, Any], dataset: str, model_name: str, condition: str,
                seed: int) -> dict[str, Any]:
    """What a run's predictions are made from (their stamp hashes the content): the trained
    weights (``adapter/`` or ``model/``; none for ``untrained``) and the test file."""
    run = paths.run_dir(cfg["profile"], dataset, model_name, condition, seed)
    tp = traces.test_path_for(cfg, dataset, condition)
    out: dict[str, Any] = {f"traces/{dataset}/{tp.name}": tp}
    if condition != UNTRAINED:
        w = "model" if cfg.get("method") == "full" else "adapter"
        out[f"runs/{dataset}/{model_name}/{condition}/seed{seed}/{w}"] = run / w
    return out


def _complete(path, items, max_new_tokens) -> bool:
    have = read_predictions(path)
    return all(it["id"] in have and have[it["id"]].get("prompt_hash") == prompt_hash(it["prompt"])
               and have[it["id"]].get("max_new_tokens") == max_new_tokens for it in items)


def evaluate_run(cfg: Mapping[str, Any], dataset: str, model_name: str, condition: str, seed: int,
                 *, progress: bool = True) -> pd.DataFrame:
    """Generate (or resume) and score one run; returns its items (docs/architecture.md)."""
    from . import models, scoring, sft

    run = paths.run_dir(cfg["profile"], dataset, model_name, condition, seed)
    out = run / "predictions.jsonl"
    tok = models.load_tokenizer(model_name)
    items = test_prompts(cfg, dataset, model_name, tok, condition)
    inputs = eval_inputs(cfg, dataset, model_name, condition, seed)
    if not config.is_fresh(run, cfg, EVAL_KEYS, stage="eval", inputs=inputs, name=PRED_STAMP):
        out.unlink(missing_ok=True)  # made by other weights, code or test prompts (or unstamped)
        timings_path(out).unlink(missing_ok=True)
        if condition == UNTRAINED or (run / "config.json").exists():
            config.write_stamp(run, cfg, EVAL_KEYS, stage="eval", inputs=inputs, name=PRED_STAMP)
    if not _complete(out, items, cfg["max_new_tokens"]):
        if condition == UNTRAINED:  # the base model, prompted exactly like the trained runs
            run.mkdir(parents=True, exist_ok=True)
            config.write_json(run / "config.json", {
                "config": dict(cfg), "run": {"dataset": dataset, "model": model_name,
                                             "condition": UNTRAINED, "seed": seed},
                "environment": config.environment_info()})
        elif not (run / "config.json").exists():
            raise paths.MissingInput(f"run {cfg['profile']}/{dataset}/{model_name}/{condition}/seed{seed} missing "
                                     f"({run}): run make sft PROFILE={cfg['profile']}")
        model, tok = sft.load_trained(run, model_name=model_name)
        generate_predictions(model, tok, items, out, max_new_tokens=cfg["max_new_tokens"],
                             batch_size=cfg["eval_batch_size"], progress=progress,
                             engine=cfg.get("engine") or "fast",
                             desc=f"{dataset}/{model_name}/{condition}/seed{seed}")
        del model
        gc.collect()
    preds = pd.DataFrame(read_predictions(out).values())
    preds = preds[preds["id"].isin({it["id"] for it in items})]
    # gold rows as the traces stage saw them (its decomposition rule picked `relevant`)
    gold = (traces.load_test(cfg, dataset, condition)
            .rename(columns={"gold_label": "category", "gold_relevant": "relevant"}))
    # the compat join scans the test rows in the original's order (scoring.original_order)
    from . import decompose
    order, _ = scoring.original_order(decompose.load_problems(cfg["profile"], dataset, "train"),
                                      decompose.load_problems(cfg["profile"], dataset, "test"), dataset,
                                      seed=int(cfg.get("data_seed", 42)))
    scored = scoring.score_items(preds[["id", "prediction"]], gold, dataset=dataset,
                                 condition=condition, join_order=order)
    scored["test_set"] = traces.test_set_of(condition)  # full | teacher (the teacher set's test split)
    scored.insert(0, "seed", seed)
    scored.insert(0, "condition", condition)
    scored.insert(0, "model", model_name)
    scored.insert(0, "dataset", dataset)
    return scored


def evaluate_all(cfg: Mapping[str, Any], *, progress: bool = True) -> pd.DataFrame:
    """Evaluate every run of the profile and write ``results/<profile>/items.parquet``.
    ``progress``: each run's generation (:func:`helpers.generate.generate_predictions`) and a
    line per evaluated run with the ETA of the rest (:mod:`helpers.progress`)."""
    from .progress import Progress, mtime

    todo = runs(cfg)
    bar = Progress(len(todo), "evaluation runs", unit="run", rate_label="", enabled=progress,
                   interval_s=0, min_gap_s=0)
    frames = []
    for k, r in enumerate(todo, 1):
        preds = paths.run_dir(cfg["profile"], *r) / "predictions.jsonl"
        before = mtime(preds)
        frames.append(evaluate_run(cfg, *r, progress=progress))
        fresh = before is not None and mtime(preds) == before
        (bar.skip if fresh else bar.update)(k, last="/".join(map(str, r[:3])) + f"/seed{r[3]}"
                                            + (" (predictions complete: scored only)" if fresh else ""))
    bar.close()
    items = pd.concat(frames, ignore_index=True)
    out = paths.results_dir(cfg["profile"])
    out.mkdir(parents=True, exist_ok=True)
    items.to_parquet(out / "items.parquet", index=False)
    config.write_stamp(out, cfg)
    return items
