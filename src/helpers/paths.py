"""Every folder the study reads or writes, in one place.

The repository root is found from this file (src layout), or from the environment variable
``STUDY_ROOT`` when the package is installed elsewhere. Everything generated lives in
git-ignored folders under the root; ``STUDY_MODELS`` moves the model cache (it is large
and shared between clones).
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("STUDY_ROOT", Path(__file__).resolve().parents[2]))

NOTEBOOKS = ROOT / "notebooks"      # the six numbered notebooks (committed without outputs)
PROFILES = ROOT / "profiles"        # smoke.yaml, quick.yaml, paper.yaml: papermill parameters
FIGURES = ROOT / "figures"          # figures/<profile>/<name>.{png,pdf}
DATA = ROOT / "data"                # data/<profile>/<dataset>/{train,test}.parquet
MODELS = Path(os.environ.get("STUDY_MODELS", ROOT / "models"))  # converted / tiny models
RUNS = ROOT / "runs"                # runs/<profile>/<dataset>/<model>/<condition>/seed<k>/
RESULTS = ROOT / "results"          # results/<profile>/items.parquet, tables, bench/
OUTPUTS = ROOT / "outputs"          # executed notebooks: outputs/<profile>/<notebook>.ipynb
SHARED_DATA = ROOT.parent / "shared" / "data"  # real bAbI / CoTempQA files, when present


def data_dir(profile: str, dataset: str | None = None) -> Path:
    d = DATA / profile
    return d / dataset if dataset else d


def run_dir(profile: str, dataset: str, model: str, condition: str, seed: int) -> Path:
    return RUNS / profile / dataset / model / condition / f"seed{seed}"


def results_dir(profile: str) -> Path:
    return RESULTS / profile


def figures_dir(profile: str) -> Path:
    return FIGURES / profile


class MissingInput(FileNotFoundError):
    """An input an earlier stage writes is missing: the message names the make target that
    writes it (stages read what earlier stages wrote and never run them)."""


def require(path: Path, what: str, target: str, profile: str) -> Path:
    """``path`` when it exists; else :class:`MissingInput` saying ``what`` is missing and
    that ``make <target> PROFILE=<profile>`` writes it."""
    if not Path(path).exists():
        raise MissingInput(f"{what} missing ({path}): run make {target} PROFILE={profile}")
    return Path(path)
