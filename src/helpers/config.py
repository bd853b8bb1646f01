"""Profiles, config hashing, provenance and small JSON helpers.

A *profile* is a flat YAML file of papermill parameters (``profiles/<name>.yaml``). Each
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
from typing import Any, Iterable, Mapping

import yaml

from . import paths

STAMP = "stamp.json"


def load_profile(name: str) -> dict[str, Any]:
    """The parameters of profile ``name`` (``profiles/<name>.yaml``) as a dict."""
    p = paths.PROFILES / f"{name}.yaml"
    if not p.exists():
        have = sorted(x.stem for x in paths.PROFILES.glob("*.yaml"))
        raise FileNotFoundError(f"no profile {name!r} ({p}); available: {have}")
    with open(p) as f:
        cfg = yaml.safe_load(f) or {}
    cfg.setdefault("profile", name)
    return cfg


def for_dataset(cfg: Mapping[str, Any], key: str, dataset: str, default: Any = None) -> Any:
    """``cfg[key]``, or its entry for ``dataset`` when the value is a ``{dataset: value}``
    mapping (e.g. ``n_train: {cotempqa: 128, marco: 64, babi: 64}``). A mapping that lacks
    the dataset is an error, not a silent default."""
    v = cfg.get(key, default)
    if isinstance(v, Mapping):
        if dataset not in v:
            raise KeyError(f"{key} is given per dataset ({sorted(v)}) but not for {dataset!r}")
        return v[dataset]
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
    "data": ("data", "decompose", "synthetic", "hub"),
    "decompose": ("decompose",),  # 02's variants.parquet / decomposition.json
    "traces": ("traces", "decompose", "templates", "scoring"),
    "teacher": ("teacher_stage", "teacher", "traces", "decompose", "templates", "scoring",
                "engine", "models", "model_configs", "chat", "chat_templates"),
    "sft": ("sft", "engine", "models", "model_configs", "chat", "chat_templates", "templates", "traces"),
    "krsl": ("krsl", "sft", "engine", "models", "model_configs", "chat", "chat_templates", "templates",
             "traces"),
    "eval": ("evaluate", "generate", "engine", "sft", "models", "model_configs", "chat", "chat_templates",
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
    if d.is_dir():  # a subpackage (engine/) or a data folder (chat_templates/, model_configs/)
        return sorted(x for x in d.rglob("*") if x.is_file() and "__pycache__" not in x.parts)
    raise FileNotFoundError(f"helpers has no module or folder {name!r} (in {SOURCE_DIR}); "
                            "fix config.STAGE_MODULES")


def code_hashes(stage: str) -> dict[str, str]:
    """``{file: sha256}`` of the helpers source ``stage``'s output depends on
    (:data:`STAGE_MODULES`), file names relative to the package."""
    if stage not in STAGE_MODULES:
        raise KeyError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_MODULES)}")
    out = {}
    for name in STAGE_MODULES[stage]:
        for p in _module_files(name):
            out[p.relative_to(SOURCE_DIR).as_posix()] = sha256_file(p)
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
    """The parameter names every notebook carries (the keys of the quick profile)."""
    return list(load_profile("quick").keys())


def from_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The run config from a notebook's parameters (its ``globals()`` after the parameters
    cell and papermill's injected cell). Unknown profile keys raise, so a typo in a YAML file
    or a notebook is caught instead of silently ignored."""
    keys = param_keys()
    missing = [k for k in keys if k not in namespace]
    if missing:
        raise KeyError(f"parameters cell lacks {missing}; every notebook carries all profile keys")
    cfg = {k: namespace[k] for k in keys}
    if cfg.get("data_source") == "local" and not cfg.get("data_dir"):
        raise ValueError("data_source='local' needs data_dir (make data DATA_DIR=<dir>)")
    return cfg
