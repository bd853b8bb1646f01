"""Profiles, config hashing, provenance and small JSON helpers.

Parameters live in ``profiles/defaults.yaml`` (every key, its default and its comment); a
*profile* (``profiles/<name>.yaml``) holds only the keys it changes (:func:`load`), and each
notebook's parameters cell shows the keys it uses (:func:`notebook_params`). Each
stage hashes the part of the config it depends on (:func:`config_hash`) and writes it next
to its artifacts (:func:`write_stamp`) together with the hash of the helpers source the stage
depends on and of the input files it read; :func:`is_fresh` tells whether an artifact was made
with the same config, code and inputs, so a changed parameter, rule, template or input file
recomputes exactly what depends on it (see "stamps" below).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from . import paths

STAMP = "stamp.json"


DEFAULTS = "defaults"  # profiles/defaults.yaml: every key, its default and its comment


def _read_yaml(p: Path) -> dict[str, Any]:
    with open(p) as f:
        out = yaml.safe_load(f) or {}
    if not isinstance(out, dict):
        raise ValueError(f"{p} must hold a mapping of parameters, not {type(out).__name__}")
    return out


def defaults() -> dict[str, Any]:
    """Every parameter of the study with its default (``profiles/defaults.yaml``), in its order."""
    return _read_yaml(paths.PROFILES / f"{DEFAULTS}.yaml")


def profile_names() -> list[str]:
    """The profiles in ``profiles/`` (every YAML file but the defaults)."""
    return sorted(p.stem for p in paths.PROFILES.glob("*.yaml") if p.stem != DEFAULTS)


def profile_overrides(name: str) -> dict[str, Any]:
    """What profile ``name`` changes (``profiles/<name>.yaml`` as written: only its own keys)."""
    p = paths.PROFILES / f"{name}.yaml"
    if name == DEFAULTS or not p.exists():
        raise FileNotFoundError(f"no profile {name!r} ({p}); available: {profile_names()}")
    return _read_yaml(p)


def _merge(base: dict[str, Any], changes: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = [k for k in changes if k not in base]
    if unknown:
        raise KeyError(f"{where} sets {unknown}, which profiles/{DEFAULTS}.yaml does not define "
                       "(a typo? every parameter has its line and comment there)")
    return {**base, **changes}


def load(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run config of profile ``name``: ``profiles/defaults.yaml``, then
    ``profiles/<name>.yaml`` over it, then ``overrides`` (a notebook's parameters, make's
    ``DATA_DIR``). Every key is defined in the defaults: an unknown key is an error."""
    prof = profile_overrides(name)
    if prof.get("profile", name) != name:
        raise ValueError(f"profiles/{name}.yaml sets profile: {prof['profile']!r}; the profile is its file name")
    cfg = _merge(defaults(), prof, f"profiles/{name}.yaml")
    cfg["profile"] = name
    over = dict(overrides or {})
    if over.get("profile", name) != name:
        raise ValueError(f"an override cannot change the profile ({over['profile']!r} over {name!r})")
    return _merge(cfg, over, "an override")


def load_profile(name: str) -> dict[str, Any]:
    """The parameters of profile ``name`` (defaults + ``profiles/<name>.yaml``) as a dict."""
    return load(name)


def for_dataset(cfg: Mapping[str, Any], key: str, dataset: str, default: Any = None) -> Any:
    """``cfg[key]``, or its entry for ``dataset`` when the value is a ``{dataset: value}``
    mapping (e.g. ``n_train: {cotempqa: 128, marco: 64, babi: 64}``). A mapping that lacks
    the dataset is an error, not a silent default."""
    v = cfg.get(key, default)
    if isinstance(v, Mapping):
        try:
            return v[dataset]
        except KeyError:
            raise KeyError(f"{key} is given per dataset ({sorted(v)}) but not for {dataset!r}") from None
    return v


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 2e-4 vs 0.0002, 3.0 vs 3: same config, same hash
    return obj


def config_hash(cfg: Mapping[str, Any], keys: Iterable[str] | None = None, n: int = 12) -> str:
    """Stable short hash of ``cfg`` (restricted to ``keys`` if given)."""
    if keys is not None:
        cfg = {k: cfg.get(k) for k in keys}
    blob = json.dumps(_canonical(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=paths.ROOT, capture_output=True, text=True, timeout=5).stdout
        return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict[str, Any]:
    """Package versions, machine and git commit: recorded with every artifact."""
    import importlib.metadata as md

    versions = {}
    for pkg in ["torch", "transformers", "datasets", "peft", "accelerate", "pandas", "numpy",
                "scipy", "statsmodels", "bitsandbytes", "helpers"]:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "git_commit": git_commit(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # torch missing or broken: still record the rest
        info["cuda"] = None
    return info


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return obj.item()
        except (ValueError, TypeError):
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (write to a temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(to_jsonable(obj), f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------ stamps
# A stage's stamp hashes three things, so that a change to any of them recomputes the stage:
#   1. the config keys it uses (``keys``);
#   2. the source of the helpers modules that decide what it writes (``STAGE_MODULES``: a small,
#      explicit list per stage; infrastructure that does not change an artifact - config,
#      paths, progress - and modules the stage does not use - bench, figures, stats - are left
#      out, so editing them re-runs nothing);
#   3. the content of the input files it read (``inputs``): for the data stage the files under
#      DATA_DIR (data_source local), for every later stage the artifacts of the stage before
#      (trace files, adapters). A stage keys on the *content* of what it read, so an upstream
#      change that leaves an upstream artifact byte-identical stops there.
SOURCE_DIR = Path(__file__).resolve().parent  # the helpers package the code hash reads

STAGE_MODULES: dict[str, tuple[str, ...]] = {
    # qa/ (a folder: every file of the package) holds the datasets' loaders, generators, rules,
    # sentences and hooks; 01 and 02 re-run on any edit there (their outputs then compare equal
    # unless the edit changed them, and the stages after key on those outputs' content)
    "data": ("data", "qa", "hub"),
    "decompose": ("decompose", "data", "qa"),  # 02: problems/, variants.parquet, decomposition.json
    "traces": ("traces", "conditions", "decompose", "qa", "templates", "scoring"),
    "teacher": ("teacher_stage", "teacher", "conditions", "traces", "decompose", "qa", "templates", "scoring",
                "generate", "engine", "models", "model_configs", "chat", "chat_templates"),
    "sft": ("sft", "engine", "conditions", "models", "model_configs", "chat", "chat_templates", "templates",
            "traces"),
    "krsl": ("krsl", "sft", "engine", "conditions", "models", "model_configs", "chat", "chat_templates",
             "templates", "traces"),
    "eval": ("evaluate", "generate", "engine", "sft", "conditions", "models", "model_configs", "chat",
             "chat_templates",
             "templates", "traces"),
}


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _module_files(name: str) -> list[Path]:
    p = SOURCE_DIR / f"{name}.py"
    if p.is_file():
        return [p]
    d = SOURCE_DIR / name
    if d.is_dir():  # a subpackage (engine/, qa/) or a data folder (chat_templates/, model_configs/)
        return sorted(x for x in d.rglob("*") if x.is_file() and "__pycache__" not in x.parts)
    raise FileNotFoundError(f"helpers has no module or folder {name!r} (in {SOURCE_DIR}); "
                            "fix config.STAGE_MODULES")


# The trace sentences sit in the dataset modules (helpers/qa/<dataset>.py) beside the loaders and
# rules, but only the trace stage and what follows read them. The stages before it hash those
# modules without these top-level assignments, so a new sentence re-runs exactly 03 and what
# follows (tests/test_stamps.py checks that 01 and 02 stay fresh and would write the same bytes).
TRACE_TEXT_NAMES = ("CLASSIFICATION", "RETRIEVAL")
SOURCE_EXCLUDES: dict[str, dict[str, tuple[str, ...]]] = {
    "data": {"qa": TRACE_TEXT_NAMES},
    "decompose": {"qa": TRACE_TEXT_NAMES},
}


def _sha256_without(path: Path, names: Sequence[str]) -> str:
    """The sha256 of a module's source with its top-level assignments to ``names`` left out."""
    import ast

    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    drop: set[int] = set()
    for node in ast.parse(text, filename=str(path)).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if targets and all(isinstance(t, ast.Name) and t.id in names for t in targets):
            drop.update(range(node.lineno - 1, node.end_lineno))
    kept = "".join(line for i, line in enumerate(lines) if i not in drop)
    return hashlib.sha256(kept.encode("utf-8")).hexdigest()


def code_hashes(stage: str) -> dict[str, str]:
    """``{file: sha256}`` of the helpers source ``stage``'s output depends on
    (:data:`STAGE_MODULES`), file names relative to the package. Python files of a module
    listed in :data:`SOURCE_EXCLUDES` for ``stage`` are hashed without the named assignments."""
    if stage not in STAGE_MODULES:
        raise KeyError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_MODULES)}")
    out = {}
    for name in STAGE_MODULES[stage]:
        skip = SOURCE_EXCLUDES.get(stage, {}).get(name)
        for p in _module_files(name):
            key = p.relative_to(SOURCE_DIR).as_posix()
            out[key] = (_sha256_without(p, skip) if skip and p.suffix == ".py" else sha256_file(p))
    return dict(sorted(out.items()))


def input_hashes(files: Mapping[str, str | Path] | Iterable[str | Path]) -> dict[str, str]:
    """``{name: sha256 of the file's bytes}`` (a folder: of its files' names and bytes; a
    missing path: ``"missing"``). ``files``: ``{name: path}``, or paths (named by themselves)."""
    items = files.items() if isinstance(files, Mapping) else ((str(p), p) for p in files)
    out = {}
    for name, p in items:
        p = Path(p)
        if p.is_file():
            out[str(name)] = sha256_file(p)
        elif p.is_dir():
            h = hashlib.sha256()
            for x in sorted(x for x in p.rglob("*") if x.is_file()):
                h.update(x.relative_to(p).as_posix().encode() + b"\0" + sha256_file(x).encode())
            out[str(name)] = h.hexdigest()
        else:
            out[str(name)] = "missing"
    return dict(sorted(out.items()))


def fingerprint(cfg: Mapping[str, Any], keys: Iterable[str] | None = None, *,
                stage: str | None = None,
                inputs: Mapping[str, str | Path] | Iterable[str | Path] = ()) -> dict[str, Any]:
    """What a stamp records about how an artifact was made: the config keys used and their
    hash, the code hashes of ``stage`` (:func:`code_hashes`), the input hashes
    (:func:`input_hashes`), and ``hash``, one hash over all three (what :func:`is_fresh`
    compares)."""
    keys = list(keys) if keys is not None else None
    used = {k: cfg.get(k) for k in keys} if keys is not None else dict(cfg)
    code = code_hashes(stage) if stage else {}
    ins = input_hashes(inputs)
    chash = config_hash(used)
    return {"hash": config_hash({"config": chash, "code": code, "inputs": ins}, n=16),
            "config_hash": chash, "config": used, "stage": stage, "code": code, "inputs": ins}


def write_stamp(folder: str | Path, cfg: Mapping[str, Any], keys: Iterable[str] | None = None, *,
                stage: str | None = None,
                inputs: Mapping[str, str | Path] | Iterable[str | Path] = (),
                name: str = STAMP, **extra: Any) -> Path:
    """Record that ``folder``'s artifacts are complete and how they were made
    (:func:`fingerprint`), with ``extra`` fields (summaries) and, apart, the provenance
    (``environment``: versions, machine, git commit, time). The stamp is provenance, not an
    artifact: two identical runs give the same ``hash`` but a different ``environment.time``."""
    return write_json(Path(folder) / name, {
        **fingerprint(cfg, keys, stage=stage, inputs=inputs),
        **extra,
        "environment": environment_info(),
    })


def stamp_hash(folder: str | Path, name: str = STAMP) -> str | None:
    """The ``hash`` recorded in ``folder``'s stamp (None without a readable stamp)."""
    p = Path(folder) / name
    try:
        return read_json(p).get("hash") if p.exists() else None
    except (OSError, json.JSONDecodeError):
        return None


def is_fresh(folder: str | Path, cfg: Mapping[str, Any], keys: Iterable[str] | None = None, *,
             stage: str | None = None,
             inputs: Mapping[str, str | Path] | Iterable[str | Path] = (), name: str = STAMP) -> bool:
    """True when ``folder`` holds a stamp made with the same (restricted) config, the same
    source of ``stage``'s modules and the same input file contents."""
    have = stamp_hash(folder, name)
    return have is not None and have == fingerprint(cfg, keys, stage=stage, inputs=inputs)["hash"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    except ImportError:
        pass


def offline() -> bool:
    """True when the Hugging Face hub must not be contacted (HF_HUB_OFFLINE=1)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def param_keys() -> list[str]:
    """Every parameter name (the keys of ``profiles/defaults.yaml``), in order."""
    return list(defaults().keys())


# ----------------------------------------------------------- notebooks and their parameters
# A notebook's parameters cell shows the keys that notebook uses, each with its comment, plus
# ``profile`` and ``overrides`` (keys set for the whole run, e.g. make's DATA_DIR). Everything
# else comes from the profile: :func:`from_params` loads it and puts the notebook's own
# parameters over it. Make hands each notebook only its own keys (:func:`notebook_params`).
RUN_PARAMS = ("profile", "overrides")  # in every parameters cell; not keys of the config


def parameters_cell(notebook: str | Path) -> dict[str, Any]:
    """``{name: value}`` assigned in the ``parameters``-tagged cell of ``notebook`` (an .ipynb
    path, or a name in ``notebooks/``), in order. Values must be Python literals."""
    import ast

    p = Path(notebook)
    if not p.suffix:
        p = paths.NOTEBOOKS / f"{p.name}.ipynb"
    cells = [c for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"
             and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{p}: {len(cells)} parameters cells (papermill wants one)")
    src = "".join(cells[0]["source"])
    out: dict[str, Any] = {}
    for node in ast.parse(src).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{p}: the parameters cell holds only `name = literal` lines, not "
                             f"{ast.get_source_segment(src, node)!r}")
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def notebook_params(notebook: str | Path, profile: str,
                    overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The papermill parameters of ``notebook`` under ``profile`` (+ ``overrides``): exactly the
    names of its parameters cell, valued from the loaded config, so papermill sees no unknown
    parameter and every notebook of a run sees the same config."""
    cfg = load(profile, overrides)
    out: dict[str, Any] = {}
    for k in parameters_cell(notebook):
        if k == "profile":
            out[k] = profile
        elif k == "overrides":
            out[k] = dict(overrides or {})
        elif k in cfg:
            out[k] = cfg[k]
        else:
            raise KeyError(f"{notebook}: parameter {k!r} is not defined in profiles/{DEFAULTS}.yaml")
    missing = [k for k in ("profile", "overrides") if k not in out]
    if missing:
        raise KeyError(f"{notebook}: the parameters cell lacks {missing}")
    return out


def from_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The run config from a notebook's parameters (its ``globals()`` after the parameters
    cell and papermill's injected cell): the profile (:func:`load`, with ``overrides``), and
    over it every parameter the notebook sets itself. Unknown override keys raise."""
    if not namespace.get("profile"):
        raise KeyError("the parameters cell lacks `profile`")
    cfg = load(namespace["profile"], namespace.get("overrides") or {})
    cfg.update({k: namespace[k] for k in cfg if k != "profile" and k in namespace})
    if cfg.get("data_source") == "local" and not cfg.get("data_dir"):
        raise ValueError("data_source='local' needs data_dir (make data DATA_DIR=<dir>)")
    return cfg


def _parse_set(items: Iterable[str], base: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants key=value, not {item!r}")
        # strings stay strings (a data_dir is never parsed as YAML); others are YAML values
        out[k] = v if isinstance(base.get(k), str) else yaml.safe_load(v)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m helpers.config params PROFILE NOTEBOOK [--set key=value ...]``: the YAML
    papermill parameters of one notebook (what make passes it); ``show PROFILE``: the loaded
    config."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m helpers.config")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("params", help="a notebook's papermill parameters under a profile")
    a.add_argument("profile")
    a.add_argument("notebook")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an explicit override for the whole run (make's DATA_DIR)")
    b = sub.add_parser("show", help="the loaded config of a profile")
    b.add_argument("profile")
    args = ap.parse_args(argv)
    if args.cmd == "params":
        over = _parse_set(args.set, defaults())
        out = notebook_params(args.notebook, args.profile, over)
    else:
        out = load(args.profile)
    sys.stdout.write(yaml.safe_dump(out, sort_keys=False, default_flow_style=None, width=200))


if __name__ == "__main__":
    main()
