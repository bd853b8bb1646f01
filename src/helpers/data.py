"""01: the datasets in one schema, loaded, validated, split and sampled (the *interim* problems).

One row is one problem (docs/architecture.md, "Data schema")::

    id, dataset, split, question, context, answers, category, source, synthetic, meta

``context`` / ``answers`` are lists of str, ``category`` the source's category (CoTempQA
scenario, MS MARCO query type, bAbI task: what the splits are stratified by), ``meta`` a JSON
object string with the source metadata. :func:`validate` checks all of it. The decomposition
(label, relevant facts, quality flags) is 02's (:mod:`helpers.decompose`): this stage applies
no rule.

Every dataset is a module of :mod:`helpers.qa` (its loaders, its generator, its hub pin); this
module only picks the source and caps the splits. Sources (``data_source``):

* ``synthetic``: the dataset's seeded generator (offline, exact ground truth, labelled
  synthetic wherever shown);
* ``local``: real files under ``data_dir`` in the ``../shared/data`` layout (each dataset
  module says which: ``babi/en/qaN_<task>_{train,test}.txt``, ``cotempqa/{equal,overlap,
  during,mix}.json``, ``marco/*.jsonl|*.parquet``). A dataset whose local files are absent
  (MS MARCO) falls back to its generator, with a warning;
* ``hub``: ``datasets.load_dataset`` at the pinned revision of each dataset module (``HUB``).

Splits follow the original study (STUDY_SPEC §1; each dataset module documents its own).
``n_train`` / ``n_test`` then cap each split (seeded, stratified by category; None = all; a
``{dataset: n}`` mapping gives each dataset its own size).

Bad input: a malformed file raises ``ValueError`` naming the file, line and reason. A row
without a required field (question, answers, context) or with no gold answer is excluded by
that documented rule and reported by id. Exclusions are counted in
``data/<profile>/data_card.json``; 02 flags the kept rows whose rules are ambiguous.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import config, hub, models, paths, qa
from .qa.base import COLUMNS, LIST_COLUMNS, SPLITS, frame, is_listlike, make_row, read_jsonl  # noqa: F401

# The parameters the data stage depends on (the stamp hashes these).
STAGE_KEYS = ["data_source", "data_dir", "n_train", "n_test", "babi_tasks", "data_seed"]
SYNTHETIC_DEFAULT_N = {"train": 1000, "test": 200}  # synthetic with n_train/n_test = None

# The one hub error (helpers.hub); kept under this name for callers of helpers.data.
HubUnavailable = hub.HubUnavailable


def hub_pin(dataset: str) -> dict[str, str]:
    """The hub repo and pinned revision of ``dataset`` (its module's ``HUB``)."""
    pin = dict(qa.get(dataset).hub)
    if not pin:
        raise ValueError(f"dataset {dataset!r} has no hub source: use data_source='synthetic' or 'local'")
    return pin


# =============================================================================== schema

def validate(df: pd.DataFrame) -> pd.DataFrame:
    """Check ``df`` against the interim schema; raise ``ValueError`` naming the offending row
    id and column. Returns ``df`` unchanged."""
    cols = list(df.columns)
    if cols != COLUMNS:
        missing = [c for c in COLUMNS if c not in cols]
        extra = [c for c in cols if c not in COLUMNS]
        raise ValueError(f"schema: columns must be exactly {COLUMNS}; missing {missing}, "
                         f"unexpected {extra}" + ("" if missing or extra else ", order differs"))
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise ValueError(f"row id={dup.iloc[0]!r}: column 'id': duplicated id")
    known = qa.names()
    for row in df.to_dict("records"):
        rid = row["id"]

        def bad(col, why):
            raise ValueError(f"row id={rid!r}: column {col!r}: {why}")

        if not isinstance(rid, str) or not rid:
            bad("id", "must be a non-empty str")
        if row["dataset"] not in known:
            bad("dataset", f"{row['dataset']!r} not in {known}")
        if row["split"] not in SPLITS:
            bad("split", f"{row['split']!r} not in {SPLITS}")
        if not isinstance(row["question"], str) or not row["question"].strip():
            bad("question", "must be a non-empty str")
        for col in LIST_COLUMNS:
            if not is_listlike(row[col]):
                bad(col, f"must be a list, got {type(row[col]).__name__}")
        if not all(isinstance(c, str) for c in row["context"]):
            bad("context", "every entry must be a str")
        if len(row["answers"]) == 0 or not all(isinstance(a, str) for a in row["answers"]):
            bad("answers", "must be a non-empty list of str")
        if not isinstance(row["category"], str) or not row["category"]:
            bad("category", "must be a non-empty str")
        if row["category"] not in qa.get(row["dataset"]).label_set():
            bad("category", f"{row['category']!r} is not a {row['dataset']} label")
        if not isinstance(row["source"], str) or not row["source"]:
            bad("source", "must be a non-empty str")
        if not isinstance(row["synthetic"], (bool, np.bool_)):
            bad("synthetic", "must be a bool")
        if bool(row["synthetic"]) != (row["source"] == "synthetic"):
            bad("synthetic", f"synthetic={row['synthetic']} contradicts source {row['source']!r}")
        if not isinstance(row["meta"], str):
            bad("meta", "must be a JSON object string")
        try:
            m = json.loads(row["meta"])
        except json.JSONDecodeError as e:
            bad("meta", f"invalid JSON ({e})")
        if not isinstance(m, dict):
            bad("meta", "must decode to a JSON object")
    return df


def to_lists(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet returns list columns as numpy arrays: make them plain Python lists."""
    df = df.copy()
    for col in ("context", "answers", "relevant", "flags"):
        if col in df:
            df[col] = [[x.item() if hasattr(x, "item") else x for x in v] if v is not None else []
                       for v in df[col]]
    if "relevant" in df:
        df["relevant"] = [[int(i) for i in v] for v in df["relevant"]]
    if "relevant_original" in df:  # None: 02 could not run the original's rule (stays None)
        df["relevant_original"] = [None if v is None else [int(i) for i in v] for v in df["relevant_original"]]
    if "synthetic" in df:
        df["synthetic"] = df["synthetic"].astype(bool)
    return df


_to_lists = to_lists


# =============================================================================== sampling

def stratified_sample(df: pd.DataFrame, n: int | None, seed: int, by: str = "category") -> pd.DataFrame:
    """``n`` rows of ``df``, seeded, stratified by ``by`` (proportional allocation by largest
    remainder; each group at least one row when ``n`` allows); original order kept.
    ``n`` None or >= len(df): all rows."""
    if n is None or n >= len(df):
        return df
    if n <= 0:
        return df.iloc[0:0]
    sizes = df.groupby(by, sort=True).size()
    quota = sizes / sizes.sum() * n
    base = np.floor(quota).astype(int)
    left = n - int(base.sum())
    order = (quota - base).sort_values(ascending=False, kind="stable").index[:left]
    base.loc[order] += 1
    if n >= len(sizes):  # every group keeps at least one row, taken from the largest share
        for name in base.index[base == 0]:
            donor = base.idxmax()
            base[donor] -= 1
            base[name] = 1
    parts = [g.sample(n=int(base[name]), random_state=seed)
             for name, g in df.groupby(by, sort=True) if base[name] > 0]
    out = pd.concat(parts)
    return df.loc[df.index.isin(out.index)]


# =============================================================================== prepare

def _synthetic(dataset: str, cfg: Mapping[str, Any], note: str | None = None) -> tuple[pd.DataFrame, dict]:
    spec = qa.get(dataset)
    if spec.generate is None:
        raise ValueError(f"dataset {dataset!r} has no synthetic generator: use data_source='local' or 'hub'")
    spec.check_synthetic(cfg)
    seed = int(cfg["data_seed"])
    parts = []
    for split in SPLITS:
        n = config.for_dataset(cfg, f"n_{split}", dataset)
        parts.append(spec.generate(SYNTHETIC_DEFAULT_N[split] if n is None else int(n), seed, split))
    return pd.concat(parts, ignore_index=True), {"source": "synthetic", "excluded": [],
                                                 "warnings": [note] if note else []}


def load_dataset_source(dataset: str, cfg: Mapping[str, Any]) -> tuple[pd.DataFrame, dict]:
    """The full (uncapped) dataset from ``cfg['data_source']`` and a report
    ``{source, excluded, warnings}``."""
    src = cfg.get("data_source", "synthetic")
    spec = qa.get(dataset)
    if src == "synthetic":
        return _synthetic(dataset, cfg)
    if src == "local":
        d = cfg.get("data_dir")
        if not d:
            raise ValueError("data_source='local' needs data_dir (make data DATA_DIR=<dir>)")
        if not Path(d).is_dir():
            raise FileNotFoundError(f"data_dir {d!r} is not a folder")
        if spec.load_local is None:
            raise ValueError(f"dataset {dataset!r} has no local loader: use data_source='synthetic' or 'hub'")
        if spec.local_available(Path(d)):
            return spec.load_local(Path(d), cfg)
        msg = (f"no local {spec.display_name} files under {Path(d) / dataset} (see helpers.qa.{dataset}): "
               f"using the SYNTHETIC {spec.display_name} generator instead; its rows are labelled "
               "synthetic")
        warnings.warn(msg, stacklevel=2)
        return _synthetic(dataset, cfg, note=msg)
    if src == "hub":
        if spec.load_hub is None:
            raise ValueError(f"dataset {dataset!r} has no hub loader: use data_source='synthetic' or 'local'")
        return spec.load_hub(cfg)
    raise ValueError(f"data_source must be 'synthetic', 'local' or 'hub', not {src!r}")


def apply_caps(df: pd.DataFrame, cfg: Mapping[str, Any], dataset: str) -> pd.DataFrame:
    """Cap each split at ``n_train`` / ``n_test`` (seeded, stratified by category; a
    ``{dataset: n}`` mapping caps each dataset at its own size)."""
    seed = int(cfg.get("data_seed", 42))
    parts = []
    for split in SPLITS:
        part = df[df["split"] == split]
        if not (part["synthetic"].all() and len(part)):  # generators already made exactly n
            part = stratified_sample(part, config.for_dataset(cfg, f"n_{split}", dataset), seed)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _stage_cfg(cfg: Mapping[str, Any]) -> dict:
    c = {k: cfg.get(k) for k in STAGE_KEYS}
    if c["data_source"] != "local":
        c["data_dir"] = ""
    if c["data_source"] == "hub":  # a new pin makes the data stale
        c["hub"] = {ds: dict(qa.get(ds).hub) for ds in sorted(qa.names()) if qa.get(ds).hub}
    return c


def local_input_files(dataset: str, cfg: Mapping[str, Any]) -> dict[str, Path]:
    """The files under ``data_dir`` the local loader of ``dataset`` reads, named relative to
    ``data_dir`` (what the data stage's stamp hashes; empty unless ``data_source`` is local).
    A file the loader needs but that is missing is listed too: it hashes as missing, and the
    loader then stops with its own message."""
    d = cfg.get("data_dir")
    if cfg.get("data_source") != "local" or not d or not Path(d).is_dir():
        return {}
    d = Path(d)
    spec = qa.get(dataset)
    files = spec.local_files(d, cfg) if spec.local_files is not None else []
    return {p.relative_to(d).as_posix(): p for p in files}


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _length_stats(values: Sequence[float]) -> dict:
    s = pd.Series(list(values), dtype=float)
    if s.empty:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {"mean": round(float(s.mean()), 2), "median": float(s.median()),
            "min": float(s.min()), "max": float(s.max())}


def flag_counts(splits: Mapping[str, pd.DataFrame]) -> dict[str, dict]:
    """Rows by data-quality flag (02's ``flags`` column): ``{flag: {count, ids}}``."""
    flagged: dict[str, dict] = {}
    for df in splits.values():
        for rid, flags in zip(df["id"], df["flags"]):
            for f in flags:
                e = flagged.setdefault(str(f), {"count": 0, "ids": []})
                e["count"] += 1
                e["ids"].append(str(rid))
    return flagged


def card_entry(splits: Mapping[str, pd.DataFrame], report: Mapping[str, Any]) -> dict:
    """The data card of one dataset: counts per split and category, excluded rows by reason
    with ids, context-length statistics (and, for decomposed problems with ``relevant`` and
    ``flags`` columns, the relevant-fact counts and the flagged rows)."""
    counts, totals, lengths = {}, {}, {}
    for split, df in splits.items():
        counts[split] = {str(k): int(v) for k, v in df["category"].value_counts().sort_index().items()}
        totals[split] = int(len(df))
        lengths[split] = {
            "facts": _length_stats([len(c) for c in df["context"]]),
            "words": _length_stats([sum(len(str(x).split()) for x in c) for c in df["context"]]),
        }
        if "relevant" in df:
            lengths[split]["relevant"] = _length_stats([len(r) for r in df["relevant"]])
    excluded: dict[str, dict] = {}
    for x in report.get("excluded", []):
        e = excluded.setdefault(x["reason"], {"count": 0, "ids": [], "where": []})
        e["count"] += 1
        e["ids"].append(x["id"])
        e["where"].append(x.get("where", ""))
    any_df = next(iter(splits.values()))
    synth = bool(len(any_df) and any_df["synthetic"].all())
    out = {"source": report.get("source"), "synthetic": synth,
           "warnings": list(report.get("warnings", [])), "counts": counts, "totals": totals,
           "context_length": lengths, "excluded": excluded}
    if all("flags" in df for df in splits.values()):
        out["flagged"] = flag_counts(splits)
    return out


def prepare(cfg: Mapping[str, Any], force: bool = False) -> dict[str, dict[str, pd.DataFrame]]:
    """Build every dataset of ``cfg['datasets']`` from ``cfg['data_source']``, cap the splits,
    write ``data/<profile>/<dataset>/{train,test}.parquet`` + ``stamp.json`` (skipped when the
    stamp is fresh, unless ``force``) and ``data/<profile>/data_card.json``.

    Returns ``{dataset: {"train": df, "test": df}}``."""
    profile = cfg["profile"]
    stage = _stage_cfg(cfg)
    out: dict[str, dict[str, pd.DataFrame]] = {}
    card = {"profile": profile, "data_source": cfg.get("data_source"),
            "config": stage, "config_hash": config.config_hash(stage), "datasets": {}}
    for ds in tqdm(cfg["datasets"], desc=f"data ({cfg.get('data_source')})"):
        folder = paths.data_dir(profile, ds)
        files = {s: folder / f"{s}.parquet" for s in SPLITS}
        inputs = local_input_files(ds, cfg)
        if (not force and config.is_fresh(folder, stage, stage="data", inputs=inputs)
                and all(p.exists() for p in files.values())):
            report = config.read_json(folder / config.STAMP).get("report", {})
            splits = {s: load_split(profile, ds, s) for s in SPLITS}
            for msg in report.get("warnings", []):
                warnings.warn(msg, stacklevel=2)
        else:
            full, report = load_dataset_source(ds, cfg)
            capped = validate(apply_caps(full, cfg, ds))
            folder.mkdir(parents=True, exist_ok=True)
            splits = {}
            for s in SPLITS:
                part = capped[capped["split"] == s].reset_index(drop=True)
                _write_parquet(part, files[s])
                splits[s] = part
            report = dict(report, uncapped={s: int((full["split"] == s).sum()) for s in SPLITS})
            config.write_stamp(folder, stage, stage="data", inputs=inputs, report=report)
        out[ds] = splits
        entry = card_entry(splits, report)
        entry["uncapped"] = report.get("uncapped")
        card["datasets"][ds] = entry
    config.write_json(paths.data_dir(profile) / "data_card.json", card)
    return out


def load_split(profile: str, dataset: str, split: str) -> pd.DataFrame:
    """The interim problems ``data/<profile>/<dataset>/<split>.parquet`` (01's output) as a
    DataFrame (list columns as lists)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    p = paths.require(paths.data_dir(profile, dataset) / f"{split}.parquet",
                      f"the {dataset} {split} problems (01)", "data", profile)
    df = pd.read_parquet(p)
    if list(df.columns) != COLUMNS:
        raise ValueError(f"{p} is not in the interim schema {COLUMNS} (written by older code?): "
                         f"run `make data PROFILE={profile}` again")
    return to_lists(df)


def read_card(profile: str) -> dict:
    p = paths.data_dir(profile) / "data_card.json"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: run the data stage first "
                                f"(`make data PROFILE={profile}` or notebooks/01_data.ipynb)")
    return config.read_json(p)


def card_tables(card: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The data card as tables: ``counts`` (dataset, category, train, test), ``lengths``
    (dataset, split, facts/words per problem), ``flags`` (dataset, flag, count, example ids),
    ``excluded`` (dataset, reason, count, example ids), ``sources``."""
    counts, lengths, flags, excl, srcs = [], [], [], [], []
    for ds, e in card["datasets"].items():
        cats = sorted(set().union(*[set(v) for v in e["counts"].values()]))
        for c in cats:
            counts.append({"dataset": ds, "category": c,
                           **{s: e["counts"].get(s, {}).get(c, 0) for s in SPLITS}})
        for s, L in e["context_length"].items():
            lengths.append({"dataset": ds, "split": s,
                            **{f"{k}_{m}": L[k][m] for k in ("facts", "words") for m in ("mean", "min", "max")}})
        for f, v in e.get("flagged", {}).items():
            flags.append({"dataset": ds, "flag": f, "count": v["count"], "ids": ", ".join(v["ids"][:5])
                          + (" ..." if v["count"] > 5 else "")})
        for r, v in e["excluded"].items():
            excl.append({"dataset": ds, "reason": r, "count": v["count"], "ids": ", ".join(v["ids"][:5])})
        srcs.append({"dataset": ds, "source": e["source"], "synthetic": e["synthetic"],
                     "train": e["totals"].get("train"), "test": e["totals"].get("test"),
                     "warnings": " | ".join(e["warnings"])})
    return {"sources": pd.DataFrame(srcs), "counts": pd.DataFrame(counts),
            "lengths": pd.DataFrame(lengths),
            "flags": pd.DataFrame(flags, columns=["dataset", "flag", "count", "ids"]),
            "excluded": pd.DataFrame(excl, columns=["dataset", "reason", "count", "ids"])}


# ============================================================================ preflight
# Before any work (01's first cell): every hub repo the profile needs is usable. It lives here,
# not in helpers.hub, because it needs the datasets' pins and the models' table; hub stays a
# leaf that only talks to the hub.
def needs_hub(cfg: Mapping[str, Any]) -> bool:
    """True when the profile loads data or models from the hub."""
    if cfg.get("data_source") == "hub":
        return True
    return any(models.model_info(m)["source"] == "hub" for m in cfg.get("models") or [])


def preflight(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Before any work: every hub dataset (at its pinned revision) and every hub model of
    ``cfg`` is reachable, and gated ones are accessible with the token present.

    Returns one row per repo ``{kind, name, repo, revision, commit, status}`` (an empty list
    when the profile needs no hub). A problem raises :class:`hub.HubUnavailable` naming every
    repo that failed and the way out; an unreachable hub stops at the first repo (within
    the wall-clock limit). With HF_HUB_OFFLINE=1 a hub model already in the local cache
    passes; hub datasets fail (they are not read from a cache here)."""
    if not needs_hub(cfg):
        return []
    todo: list[tuple[str, str, str, str, str | None, bool]] = []
    if cfg.get("data_source") == "hub":
        for ds in cfg.get("datasets") or []:
            h = hub_pin(ds)
            todo.append(("dataset", ds, h["repo"], "dataset", h["revision"], False))
    for m in cfg.get("models") or []:
        info = models.model_info(m)
        if info["source"] == "hub":
            todo.append(("model", m, info["repo"], "model", info.get("revision"),
                         bool(info.get("gated"))))
    rows, problems = [], []
    for kind, name, repo, rtype, rev, gated in todo:
        row = {"kind": kind, "name": name, "repo": repo, "revision": rev, "commit": None,
               "gated": gated, "status": ""}
        if hub.offline() and rtype == "model" and models.cached_config(repo, rev):
            row["status"] = "in the local cache (offline)"
            rows.append(row)
            continue
        try:
            if rev and not hub.FULL_SHA.fullmatch(rev):
                row["commit"] = hub.pinned_revision(repo, rev, rtype, f"{kind} {name}")
                hub.check_repo(repo, rtype, row["commit"], f"{kind} {name}")
            else:
                row["commit"] = hub.check_repo(repo, rtype, rev, f"{kind} {name}")
            row["status"] = "ok"
        except hub.HubUnavailable as e:
            msg = str(e)
            if "cannot reach" in msg or "no answer" in msg or "HF_HUB_OFFLINE" in msg:
                raise  # the hub itself is out: every other repo would fail the same way
            row["status"] = "FAILED"
            problems.append(msg)
        rows.append(row)
    if problems:
        raise hub.HubUnavailable("preflight: " + str(len(problems)) + " of " + str(len(todo))
                                 + " hub repos are not usable:\n- " + "\n- ".join(problems))
    return rows
