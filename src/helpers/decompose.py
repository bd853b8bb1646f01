"""02: the rule-based decomposition of every problem into its two trace steps (STUDY_SPEC §1).

Every problem is decomposed into

1. its **classification label** (:func:`classify`): the CoTempQA scenario, the MS MARCO
   ``query_type`` or the bAbI task name;
2. its **relevant facts** (:func:`relevant`): indices into ``row["context"]``.

The rules and their variants are the dataset modules' (:mod:`helpers.qa`: each module's
docstring states its default rule, the original study's, and its variants); this module
applies them to the interim problems 01 wrote and writes what 03 reads:

* ``data/<profile>/<dataset>/problems/{train,test}.parquet``: the problems with their
  ``label``, the ``relevant`` facts of the configured rule (``decomposition``), the
  ``relevant_original`` facts of the ``original`` rendering (the dataset's original rule
  where it has one, e.g. MS MARCO's nltk word sets; else ``relevant``) and the data-quality
  ``flags`` (:func:`quality_flags`);
  and their ``stamp.json``;
* ``data/<profile>/<dataset>/variants.parquet`` (every variant per problem) and
  ``data/<profile>/decomposition.json`` (agreement, ambiguity, flags per dataset).

:func:`ambiguity` tells whether the default rule had a unique choice (``unique``), found
nothing (``none``: e.g. no fact contains the answer) or had several candidates
(``several``: an answer in more than one fact, or tied passages).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping as _MappingABC
from typing import Any, Iterator, Mapping

import pandas as pd

from . import config, data, paths, qa
from .qa.base import AMBIGUITY_FLAGS, meta  # noqa: F401  (meta: the row's meta as a dict)

SPLITS = ("train", "test")
# The processed problems (what 03 reads): the interim columns with the decomposition.
PROBLEM_COLUMNS = ["id", "dataset", "split", "question", "context", "answers", "category",
                   "relevant", "source", "synthetic", "flags", "meta", "label", "relevant_original"]
# The parameters the decomposition stage depends on (its stamp hashes these).
STAGE_KEYS = ["decomposition"]


def labels(dataset: str, babi_tasks: str = "all20") -> tuple[str, ...]:
    """The classification labels of ``dataset`` (bAbI: the task names of ``babi_tasks``)."""
    return qa.get(dataset).labels(babi_tasks)


class _Variants(_MappingABC):
    """``{dataset: [variant, ...]}`` over the registered datasets (``default`` first)."""

    def __getitem__(self, dataset: str) -> list[str]:
        return list(qa.get(dataset).variants)

    def __iter__(self) -> Iterator[str]:
        return iter(qa.names())

    def __len__(self) -> int:
        return len(qa.names())


VARIANTS: Mapping[str, list[str]] = _Variants()


def resolve_variant(dataset: str, name: str) -> str:
    """The variant a config-wide ``decomposition`` name means for ``dataset``: the name itself
    where the dataset defines it, else ``default`` (e.g. ``is_selected`` leaves CoTempQA and
    bAbI on their default rule)."""
    spec = qa.get(dataset)
    known = {v for d in qa.names() for v in qa.get(d).variants}
    if name not in known:
        raise ValueError(f"unknown decomposition {name!r}; known: {sorted(known)}")
    return name if name in spec.variants else "default"


def classify(dataset: str, row: Mapping[str, Any]) -> str:
    """The Classification-step label (the dataset's rule: read from the source metadata when
    present, else from the ``category`` column); an unknown label raises."""
    label = qa.get(dataset).classify(row)
    if label not in labels(dataset):
        raise ValueError(f"row {row.get('id')!r}: unknown {dataset} label {label!r}")
    return label


def relevant(dataset: str, row: Mapping[str, Any], variant: str = "default") -> list[int]:
    """Indices into ``row["context"]`` of the relevant facts under rule ``variant``
    (see :data:`VARIANTS`); sorted, no duplicates."""
    spec = qa.get(dataset)
    if variant not in spec.variants:
        raise ValueError(f"{dataset} has no decomposition variant {variant!r}; "
                         f"available: {list(spec.variants)}")
    return [int(i) for i in spec.relevant(row, variant)]


def original_relevant(dataset: str, row: Mapping[str, Any]) -> list[int]:
    """The relevant facts the ``original`` rendering cites: the dataset's original rule where
    it has one of its own (MS MARCO), else the default rule."""
    spec = qa.get(dataset)
    if spec.original_relevant is None:
        return relevant(dataset, row, "default")
    return [int(i) for i in spec.original_relevant(row)]


def ambiguity(dataset: str, row: Mapping[str, Any]) -> str:
    """How determinate the default rule is for this row: ``unique``, ``none`` or ``several``."""
    return qa.get(dataset).ambiguity(row)


def quality_flags(dataset: str, row: Mapping[str, Any]) -> list[str]:
    """Data-quality flags of a row, derived from the default rule (kept, never dropped)."""
    return list(qa.get(dataset).quality_flags(row))


# --------------------------------------------------------------------------- whole frames

def decompose_frame(df, dataset: str):
    """One row per problem: label, the relevant facts under every variant, whether each
    variant agrees with the default, and the default rule's ambiguity."""
    variants = VARIANTS[dataset]
    recs = []
    for row in df.to_dict("records"):
        rec = {"id": row["id"], "split": row["split"], "category": row["category"],
               "label": classify(dataset, row), "ambiguity": ambiguity(dataset, row),
               "n_context": len(row["context"])}
        base = relevant(dataset, row, "default")
        for v in variants:
            r = base if v == "default" else relevant(dataset, row, v)
            rec[f"relevant_{v}"] = r
            if v != "default":
                rec[f"agree_{v}"] = r == base
        recs.append(rec)
    return pd.DataFrame(recs)


def problems_frame(df: pd.DataFrame, dataset: str, decomposition: str = "default") -> pd.DataFrame:
    """The interim problems ``df`` with their decomposition (:data:`PROBLEM_COLUMNS`):
    ``label``, ``relevant`` under the variant ``decomposition`` resolves to, ``relevant_original``
    (the ``original`` rendering's facts: the dataset's original rule when that variant is the
    default, else the same as ``relevant``) and the quality ``flags``."""
    variant = resolve_variant(dataset, decomposition)
    rows = []
    for row in df.to_dict("records"):
        rel = relevant(dataset, row, variant)
        rows.append({**row, "relevant": rel, "flags": quality_flags(dataset, row),
                     "label": classify(dataset, row), "relevant_original": rel})
    if variant == "default" and qa.get(dataset).original_relevant is not None:
        try:
            originals = [original_relevant(dataset, r) for r in rows]
        except RuntimeError as e:  # e.g. MS MARCO's nltk rule without NLTK's Punkt tables
            originals = [None] * len(rows)
            warnings.warn(f"{dataset}: the original rendering's relevance rule could not run ({e}); "
                          "relevant_original is None for every problem: the project rendering is "
                          "unaffected, the original rendering stops with this reason", stacklevel=2)
        for r, o in zip(rows, originals):
            r["relevant_original"] = o
    out = pd.DataFrame(rows, columns=PROBLEM_COLUMNS)
    if len(out):
        out["synthetic"] = out["synthetic"].astype(bool)
    return validate_problems(out)


def validate_problems(df: pd.DataFrame) -> pd.DataFrame:
    """Check the decomposition columns of processed problems (indices in range, no repeats,
    flags as str); a bad row raises naming its id."""
    if list(df.columns) != PROBLEM_COLUMNS:
        raise ValueError(f"problems: columns must be exactly {PROBLEM_COLUMNS}, got {list(df.columns)}")
    for row in df.to_dict("records"):
        n = len(row["context"])
        for col in ("relevant", "relevant_original"):
            if col == "relevant_original" and row[col] is None:
                continue  # the original's rule could not run (problems_frame said so)
            rel = list(row[col])
            if any(i < 0 or i >= n for i in rel):
                raise ValueError(f"row id={row['id']!r}: column {col!r}: index out of range for a "
                                 f"context of {n}: {rel}")
            if len(set(rel)) != len(rel):
                raise ValueError(f"row id={row['id']!r}: column {col!r}: duplicate indices {rel}")
        if not all(isinstance(f, str) for f in row["flags"]):
            raise ValueError(f"row id={row['id']!r}: column 'flags': every flag must be a str")
    return df


def agreement_table(dec, dataset: str):
    """Per category: how often each variant gives the same facts as the default rule."""
    import pandas as pd

    cols = [f"agree_{v}" for v in VARIANTS[dataset] if v != "default"]
    if not cols or dec.empty:
        return pd.DataFrame({"category": sorted(dec["category"].unique()) if not dec.empty else [],
                             "n": dec.groupby("category").size().values if not dec.empty else []})
    g = dec.groupby("category")
    out = g[cols].mean().mul(100).round(1)
    out.insert(0, "n", g.size())
    total = dec[cols].mean().mul(100).round(1)
    out.loc["all"] = [len(dec), *total.tolist()]
    out["n"] = out["n"].astype(int)
    return out.reset_index()


def ambiguity_table(dec):
    """Counts of ``unique`` / ``none`` / ``several`` per category (and overall)."""
    import pandas as pd

    t = pd.crosstab(dec["category"], dec["ambiguity"], margins=True, margins_name="all")
    for c in ("unique", "none", "several"):
        if c not in t.columns:
            t[c] = 0
    return t[["unique", "none", "several", "all"]]


VARIANT_MARKS = {"default": "*", "condition": "c", "casefold": "f", "is_selected": "s"}


def _mark(variant: str) -> str:
    return VARIANT_MARKS.get(variant, variant[:1])


def explain(dataset: str, row: Mapping[str, Any], width: int = 110) -> str:
    """A problem as text for display: label, question, answers and the context, each fact
    marked with the variants that select it (``*`` = default rule)."""
    variants = VARIANTS[dataset]
    sel = {v: set(relevant(dataset, row, v)) for v in variants}
    tag = " [SYNTHETIC]" if bool(row.get("synthetic")) else ""
    context = [str(c) for c in row["context"]]
    lines = [f"{row['id']}{tag}  label={classify(dataset, row)}  ambiguity={ambiguity(dataset, row)}",
             f"Q: {row['question']}", f"A: {[str(a) for a in row['answers']]}",
             "   marks: " + ", ".join(f"{_mark(v)}={v}" for v in variants)]
    for i, c in enumerate(context):
        marks = "".join(_mark(v) if i in sel[v] else " " for v in variants)
        text = c if len(c) <= width else c[: width - 3] + "..."
        lines.append(f"  {marks} [{i}] {text}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the stage

def ambiguous_examples(dec_df, df, kind: str, n: int = 3):
    """Up to ``n`` problems whose default rule is ``kind`` (``none`` / ``several``), with the
    candidate facts, for display."""
    import pandas as pd

    ids = dec_df.loc[dec_df["ambiguity"] == kind, "id"].head(n).tolist()
    rows = df.set_index("id").loc[ids].reset_index() if ids else df.iloc[0:0]
    return pd.DataFrame([{"id": r["id"], "category": r["category"], "question": r["question"],
                          "answers": list(r["answers"]), "n_context": len(r["context"])}
                         for r in rows.to_dict("records")])


def flags_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """The flagged problems of :func:`run`'s summary as a table: dataset, flag, count, the
    first ids (flagged rows are kept, never dropped)."""
    rows = [{"dataset": ds, "flag": f, "count": v["count"],
             "ids": ", ".join(v["ids"][:5]) + (" ..." if v["count"] > 5 else "")}
            for ds, e in summary["datasets"].items() for f, v in e.get("flagged", {}).items()]
    return pd.DataFrame(rows, columns=["dataset", "flag", "count", "ids"])


def problems_dir(profile: str, dataset: str):
    return paths.data_dir(profile, dataset) / "problems"


def problems_path(profile: str, dataset: str, split: str):
    return problems_dir(profile, dataset) / f"{split}.parquet"


def _stage_cfg(cfg: Mapping[str, Any]) -> dict:
    return {"decomposition": cfg.get("decomposition") or "default"}


def interim_inputs(profile: str, dataset: str) -> dict[str, Any]:
    """The files 02 reads for ``dataset`` (its stamp hashes their content): 01's interim
    problems; a missing one is an error naming the make target."""
    out = {}
    for s in SPLITS:
        paths.require(paths.data_dir(profile, dataset) / config.STAMP, f"the data stage's stamp of {dataset}",
                      "data", profile)
        p = paths.require(paths.data_dir(profile, dataset) / f"{s}.parquet",
                          f"the {dataset} {s} problems (01)", "data", profile)
        out[f"data/{dataset}/{s}.parquet"] = p
    return out


def _read_variants(path) -> pd.DataFrame:
    f = pd.read_parquet(path)
    for c in f.columns:
        if c.startswith("relevant_"):
            f[c] = [[int(i) for i in v] for v in f[c]]
    return f


def run(cfg: Mapping[str, Any], force: bool = False) -> dict[str, Any]:
    """The decomposition stage: for every dataset of ``cfg`` read the interim problems 01
    wrote, apply the rules, write ``data/<profile>/<dataset>/problems/{train,test}.parquet``
    (what 03 reads) with its ``stamp.json`` (the config, this stage's code and the content of
    the data files it was made from; a dataset is skipped when they still match, unless
    ``force``), ``variants.parquet``, and ``data/<profile>/decomposition.json`` (the summary).
    A missing input is an error naming the make target. Returns the summary with the
    per-dataset variant frames under ``frames`` (not written to the JSON)."""
    profile = cfg["profile"]
    for ds in cfg["datasets"]:
        qa.get(ds)  # an unknown dataset is an error here, before any work
    inputs = {ds: interim_inputs(profile, ds) for ds in cfg["datasets"]}
    stage = _stage_cfg(cfg)
    summary: dict[str, Any] = {"profile": profile, "decomposition": stage["decomposition"],
                               "variants": {ds: VARIANTS[ds] for ds in cfg["datasets"]}, "datasets": {}}
    frames = {}
    for ds in cfg["datasets"]:
        folder = problems_dir(profile, ds)
        vfile = paths.data_dir(profile, ds) / "variants.parquet"
        outs = [vfile, *(problems_path(profile, ds, s) for s in SPLITS)]
        if (not force and config.is_fresh(folder, stage, stage="decompose", inputs=inputs[ds])
                and all(p.exists() for p in outs)):
            summary["datasets"][ds] = config.read_json(folder / config.STAMP)["summary"]
            frames[ds] = _read_variants(vfile)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / config.STAMP).unlink(missing_ok=True)
        splits = {s: data.load_split(profile, ds, s) for s in SPLITS}
        df = pd.concat(list(splits.values()), ignore_index=True)
        d = decompose_frame(df, ds)
        frames[ds] = d
        _write_parquet(d, vfile)
        processed = {}
        for s in SPLITS:
            processed[s] = problems_frame(splits[s], ds, stage["decomposition"])
            _write_parquet(processed[s], problems_path(profile, ds, s))
        agree = agreement_table(d, ds)
        amb = ambiguity_table(d)
        entry = {
            "n": int(len(d)),
            "synthetic": bool(df["synthetic"].all()) if len(df) else False,
            "variant": resolve_variant(ds, stage["decomposition"]),
            "label_matches_category": int((d["label"] == d["category"]).sum()),
            "agreement_pct": {str(r["category"]): {k: v for k, v in r.items() if k.startswith("agree_")}
                              for r in agree.to_dict("records")},
            "ambiguity": {str(c): {k: int(v) for k, v in row.items()} for c, row in amb.iterrows()},
            "ambiguous_ids": {k: d.loc[d["ambiguity"] == k, "id"].tolist() for k in ("none", "several")},
            "mean_relevant": {v: round(float(d[f"relevant_{v}"].map(len).mean()), 3) if len(d) else None
                              for v in VARIANTS[ds]},
            "flagged": data.flag_counts(processed),
        }
        config.write_stamp(folder, stage, stage="decompose", inputs=inputs[ds], summary=entry)
        summary["datasets"][ds] = config.read_json(folder / config.STAMP)["summary"]
    config.write_json(paths.data_dir(profile) / "decomposition.json", summary)
    summary["frames"] = frames
    return summary


def write_problems(cfg: Mapping[str, Any], dataset: str, splits: Mapping[str, pd.DataFrame]) -> None:
    """Write problems that are already decomposed (hand-made sets, tests) as 02's output:
    ``problems/<split>.parquet`` (``label`` defaults to ``category``, ``relevant_original`` to
    ``relevant``) and a ``problems/stamp.json`` naming ``cfg``'s decomposition with
    ``source: given`` (no rule was applied; :func:`run` never takes it for its own work)."""
    profile = cfg["profile"]
    folder = problems_dir(profile, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    for split, df in splits.items():
        df = df.copy()
        if "label" not in df:
            df["label"] = df["category"]
        if "relevant_original" not in df:
            df["relevant_original"] = df["relevant"]
        _write_parquet(validate_problems(df[PROBLEM_COLUMNS]), problems_path(profile, dataset, split))
    config.write_stamp(folder, _stage_cfg(cfg), stage="decompose", source="given",
                       summary={"n": int(sum(len(df) for df in splits.values())), "source": "given"})


def _write_parquet(df: pd.DataFrame, path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def stamp(profile: str, dataset: str) -> dict[str, Any]:
    """The stamp of ``dataset``'s decomposed problems (``problems/stamp.json``); a missing one
    is an error naming the make target."""
    p = paths.require(problems_dir(profile, dataset) / config.STAMP,
                      f"the stamp of the decomposed {dataset} problems (02)", "decompose", profile)
    return config.read_json(p)


def load_problems(profile: str, dataset: str, split: str) -> pd.DataFrame:
    """The processed problems 02 wrote (``problems/<split>.parquet``), list columns as lists;
    a missing file is an error naming the make target."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    p = paths.require(problems_path(profile, dataset, split), f"the decomposed {dataset} {split} problems (02)",
                      "decompose", profile)
    return data.to_lists(pd.read_parquet(p))
