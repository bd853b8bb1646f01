"""Check that 01 -> 02 -> 03 build the same problems and trace sets as a reference data folder.

    PYTHONPATH=src python scripts/check_data_identity.py --profile quick --ref ../main/data/quick
    [--rendering original] [--decomposition is_selected] [--conditions vanilla correct ...]

Builds the profile's data (01, interim), decomposition (02, processed problems) and trace sets
(03) in a temporary folder and compares, per dataset and split: the processed problems with
the reference ``<ds>/<split>.parquet`` (same ids, order, questions, contexts, answers,
categories, relevant facts, flags, meta), their ``label`` with the reference
``variants.parquet`` labels, ``variants.parquet`` itself, and every trace file of the
reference (``traces/*.parquet``: the same user turns and targets). Exits 1 on a difference.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd


def _records(df: pd.DataFrame) -> list[dict]:
    from helpers import config

    return [config.to_jsonable(r) for r in df.to_dict("records")]


def compare(name: str, new: pd.DataFrame, old: pd.DataFrame, problems: list[str]) -> None:
    missing = [c for c in old.columns if c not in new.columns]
    if missing:
        problems.append(f"{name}: columns {missing} missing")
        return
    a, b = _records(new[list(old.columns)]), _records(old)
    if a != b:
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        diff = {c: (a[k].get(c), b[k].get(c)) for c in old.columns
                if k < min(len(a), len(b)) and a[k].get(c) != b[k].get(c)}
        problems.append(f"{name}: {len(a)} vs {len(b)} rows; first difference at row {k}: {diff}")
    else:
        print(f"  same  {name}: {len(a)} rows x {len(old.columns)} columns")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="quick")
    p.add_argument("--ref", type=Path, required=True, help="the reference data/<profile> folder")
    p.add_argument("--rendering", default=None, help="override the profile's rendering")
    p.add_argument("--decomposition", default=None, help="override the profile's decomposition")
    p.add_argument("--conditions", nargs="*", default=None, help="override the profile's conditions")
    args = p.parse_args(argv)
    from helpers import config, data, decompose, paths, traces

    cfg = config.load_profile(args.profile)
    for key in ("rendering", "decomposition", "conditions"):
        if getattr(args, key):
            cfg[key] = getattr(args, key)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths.DATA = Path(tmp)
        data.prepare(cfg)
        decompose.run(cfg)
        traces.prepare_traces(cfg)
        if cfg.get("teacher"):  # the teacher family's trace files (03's last section)
            from helpers import teacher_stage

            teacher_stage.prepare_teacher(cfg)
        for ds in cfg["datasets"]:
            ref = args.ref / ds
            var_old = pd.read_parquet(ref / "variants.parquet")
            var_new = pd.read_parquet(paths.data_dir(cfg["profile"], ds) / "variants.parquet")
            compare(f"{ds}/variants.parquet", var_new, var_old, problems)
            for split in ("train", "test"):
                old = data.to_lists(pd.read_parquet(ref / f"{split}.parquet"))
                new = decompose.load_problems(cfg["profile"], ds, split)
                compare(f"{ds}/{split} problems", new, old, problems)
                labels = var_old.set_index("id")["label"]
                if new["label"].tolist() != labels.loc[new["id"]].tolist():
                    problems.append(f"{ds}/{split}: labels differ from variants.parquet")
            for f in sorted((ref / "traces").glob("*.parquet")):
                mine = traces.traces_dir(cfg["profile"], ds) / f.name
                if not mine.exists():
                    problems.append(f"{ds}/traces/{f.name}: not written")
                    continue
                compare(f"{ds}/traces/{f.name}", pd.read_parquet(mine), pd.read_parquet(f), problems)
    for x in problems:
        print("DIFF ", x)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
