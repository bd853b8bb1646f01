"""Profiles, config hashing, provenance and small JSON helpers.

A *profile* is a flat YAML file of papermill parameters (``profiles/<name>.yaml``). Each
stage hashes the part of the config it depends on (:func:`config_hash`) and writes it next
to its artifacts (:func:`write_stamp`); :func:`is_fresh` tells whether an artifact was made
with the same config, so a changed parameter recomputes only what depends on it.
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


def write_stamp(folder: str | Path, cfg: Mapping[str, Any], keys: Iterable[str] | None = None,
                **extra: Any) -> Path:
    """Record that ``folder``'s artifacts are complete and which config made them."""
    keys = list(keys) if keys is not None else None
    used = {k: cfg.get(k) for k in keys} if keys is not None else dict(cfg)
    return write_json(Path(folder) / STAMP, {
        "config_hash": config_hash(used),
        "config": used,
        "environment": environment_info(),
        **extra,
    })


def is_fresh(folder: str | Path, cfg: Mapping[str, Any], keys: Iterable[str] | None = None) -> bool:
    """True when ``folder`` holds a stamp made with the same (restricted) config."""
    p = Path(folder) / STAMP
    if not p.exists():
        return False
    keys = list(keys) if keys is not None else None
    used = {k: cfg.get(k) for k in keys} if keys is not None else dict(cfg)
    try:
        return read_json(p).get("config_hash") == config_hash(used)
    except (OSError, json.JSONDecodeError):
        return False


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
