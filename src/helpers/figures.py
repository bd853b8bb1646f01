"""Every figure of the study: one function and one fixed file name each.

Each ``fig_<name>(items, profile)`` reads the per-item results (``results/<profile>/
items.parquet``, see docs/architecture.md) and writes ``figures/<profile>/<name>.png`` and
``.pdf``; it returns the two paths. The condition ``untrained`` (no fine-tuning) is the
baseline of every accuracy figure and is drawn grey and hatched; bars are means over seeds
with a 95% t-interval (none with a single seed) and the seeds as dots; panels name the
number of items. Datasets whose problems are all generated are labelled "(synthetic)".

Figures (``FIGURES``):

=======================  ==============================================================
accuracy_by_condition    answer EM per condition, one panel per dataset and model
step_accuracy            answer, classification, IR and trace accuracy per condition
contingency_heatmaps     answer x trace 2x2 tables (summed over seeds) with phi, chi-square
forest_phi_or            phi and odds ratio with intervals per run; CMH pooled odds ratio
accuracy_by_category     answer EM per category (scenario / query type / bAbI task)
=======================  ==============================================================

(``key_steps``, the EDIT key-step figure, is not built yet.)

Command line (the make targets call it)::

    python -m helpers.figures NAME [NAME ...] --profile P     # NAME may be ``all``
"""
from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import conditions as C
from . import paths, stats
from .stats import dataset_label, synthetic_flags  # noqa: F401  (labels shared with the tables)

PathList = list[Path]

BASELINE = C.UNTRAINED
_CB = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
       "#949494", "#ece133", "#56b4e9"]  # seaborn "colorblind" (for conditions outside the table)
STEP_COLUMNS = [("answer_em", "answer"), ("cls_correct", "classification"),
                ("ir_exact", "IR"), ("trace_correct", "trace")]


def condition_color(cond: str) -> str:
    """The condition's colour (``colour`` in :mod:`helpers.conditions`); a stable one for a
    name outside the table."""
    return C.colour(cond) or _CB[sum(map(ord, cond)) % len(_CB)]


# --------------------------------------------------------------------------- plumbing

@contextmanager
def _style():
    """Seaborn styling for one figure, without changing the caller's global settings."""
    import matplotlib as mpl
    import seaborn as sns

    with mpl.rc_context():
        sns.set_theme(style="whitegrid", context="paper", font_scale=1.05)
        mpl.rcParams.update({"axes.titleweight": "bold", "hatch.color": "#555555",
                             "hatch.linewidth": 0.8, "pdf.fonttype": 42})
        yield


def _out_dir(profile: str, out_dir: str | Path | None) -> Path:
    d = Path(out_dir) if out_dir is not None else paths.figures_dir(profile)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _save(fig, name: str, profile: str, out_dir: str | Path | None) -> PathList:
    import matplotlib.pyplot as plt

    d = _out_dir(profile, out_dir)
    out = []
    for ext in ("png", "pdf"):
        p = d / f"{name}.{ext}"
        # no creation date in the PDF: the same results give the same bytes
        fig.savefig(p, dpi=150, bbox_inches="tight",
                    metadata={"CreationDate": None} if ext == "pdf" else None)
        out.append(p)
    plt.close(fig)
    return out


def _empty(name: str, profile: str, out_dir, message: str) -> PathList:
    """A figure that says why it has nothing to show (the make target still succeeds)."""
    import matplotlib.pyplot as plt

    with _style():
        fig, ax = plt.subplots(figsize=(6, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
        ax.set_title(name)
        return _save(fig, name, profile, out_dir)


def _nan(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _grid(nrows: int, ncols: int, w: float, h: float, **kw):
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False, **kw)


def _bar_kw(cond: str) -> dict[str, Any]:
    if cond == BASELINE:
        return dict(facecolor=condition_color(BASELINE), hatch="///", edgecolor="#555555", linewidth=0.8)
    return dict(facecolor=condition_color(cond), edgecolor="white", linewidth=0.5)


def _draw_bar(ax, x: float, width: float, values: Sequence[float], cond: str,
              label: str | None = None, annotate: bool = False) -> None:
    """One bar: mean of the per-seed ``values`` (fractions, drawn as %), a t-interval when
    there are two or more seeds, the seeds as dots."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=7, color="#777777")
        return
    s = stats.seed_spread(v)
    mean = 100 * s["mean"]
    ax.bar(x, mean, width=width, label=label, **_bar_kw(cond))
    if len(v) >= 2:
        lo, hi = 100 * max(s["lo"], 0.0), 100 * min(s["hi"], 1.0)
        ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], fmt="none", ecolor="#222222",
                    elinewidth=1, capsize=2.5)
        jitter = np.linspace(-width / 5, width / 5, len(v)) if len(v) > 1 else [0.0]
        ax.scatter(x + np.asarray(jitter), 100 * v, s=7, color="#222222", zorder=3, linewidths=0)
    if annotate:
        top = 100 * min(s["hi"], 1.0) if len(v) >= 2 else mean
        ax.text(x, top + 1.5, f"{mean:.1f}", ha="center", va="bottom", fontsize=7)


def _legend(fig, conds: Sequence[str], y: float = 1.0, title: str = "condition") -> None:
    from matplotlib.patches import Patch

    handles = [Patch(label=C.label(c), **_bar_kw(c)) for c in conds]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(conds), 8), frameon=False,
               bbox_to_anchor=(0.5, y), title=title)


def _seed_note(n_seeds: int) -> str:
    return "1 seed (no interval)" if n_seeds == 1 else f"{n_seeds} seeds, 95% t-interval"


# --------------------------------------------------------------------------- figures

def fig_accuracy_by_condition(items: pd.DataFrame, profile: str, out_dir: str | Path | None = None,
                              synthetic: bool | Mapping[str, bool] | None = None) -> PathList:
    """Answer exact match per condition (the paper's bar charts): rows = models, columns =
    datasets, the untrained baseline first. Tick labels give items per seed x seeds."""
    import matplotlib.pyplot as plt

    name = "accuracy_by_condition"
    stats.validate_items(items)
    ps = stats.per_seed_accuracy(items)
    dss, models = stats.datasets_present(items), sorted(items["model"].unique())
    synth = synthetic_flags(profile, dss, synthetic)
    pos = {c: x for x, c in enumerate(stats.conditions_present(items))}  # same slot in every panel
    with _style():
        fig, axes = _grid(len(models), len(dss), max(3.2, 0.62 * len(pos) + 0.8), 3.4, sharey=True)
        for i, model in enumerate(models):
            for j, ds in enumerate(dss):
                ax = axes[i, j]
                g = ps[(ps["dataset"] == ds) & (ps["model"] == model)]
                conds = stats.conditions_present(g)
                labels = []
                for c in conds:
                    gc = g[g["condition"] == c]
                    _draw_bar(ax, pos[c], 0.75, gc["answer_em"].to_numpy(), c, annotate=True)
                    labels.append(f"{c}\nn={int(gc['n'].max())}×{len(gc)}")
                ax.set_xticks([pos[c] for c in conds], labels, rotation=35, ha="right", fontsize=7.5)
                ax.set_xlim(-0.6, len(pos) - 0.4)
                ax.set_ylim(0, 105)
                ax.set_title(f"{dataset_label(ds, synth[ds])} · {model}", fontsize=10)
                if j == 0:
                    ax.set_ylabel("answer exact match (%)")
                if not conds:
                    ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center")
        n_seeds = int(ps["seed"].nunique())
        fig.suptitle(f"Answer accuracy by condition ({profile}; {_seed_note(n_seeds)}; "
                     f"n = items × seeds)", y=1.06, fontsize=11)
        _legend(fig, stats.conditions_present(items))
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        return _save(fig, name, profile, out_dir)


def fig_step_accuracy(items: pd.DataFrame, profile: str, out_dir: str | Path | None = None,
                      synthetic: bool | Mapping[str, bool] | None = None) -> PathList:
    """Accuracy of the answer and of each trace step (classification, IR, whole trace) per
    condition: rows = models, columns = datasets, groups = steps, bars = conditions.
    Conditions trained without a trace (untrained, vanilla) score their steps as produced."""
    name = "step_accuracy"
    stats.validate_items(items)
    ps = stats.per_seed_accuracy(items)
    dss, models = stats.datasets_present(items), sorted(items["model"].unique())
    synth = synthetic_flags(profile, dss, synthetic)
    all_conds = stats.conditions_present(items)
    with _style():
        fig, axes = _grid(len(models), len(dss), 5.2, 3.3, sharey=True)
        for i, model in enumerate(models):
            for j, ds in enumerate(dss):
                ax = axes[i, j]
                g = ps[(ps["dataset"] == ds) & (ps["model"] == model)]
                conds = stats.conditions_present(g)
                w = 0.84 / max(len(all_conds), 1)  # one slot per condition, the same in every panel
                for xs, (col, _) in enumerate(STEP_COLUMNS):
                    for c in conds:
                        gc = g[g["condition"] == c]
                        k = all_conds.index(c)
                        _draw_bar(ax, xs - 0.42 + w * (k + 0.5), w * 0.95, gc[col].to_numpy(), c)
                ax.set_xticks(range(len(STEP_COLUMNS)), [lab for _, lab in STEP_COLUMNS])
                ax.set_ylim(0, 105)
                n = int(g["n"].max()) if len(g) else 0
                ax.set_title(f"{dataset_label(ds, synth[ds])} · {model} (n={n})", fontsize=10)
                if j == 0:
                    ax.set_ylabel("accuracy (%)")
        fig.suptitle(f"Answer and step accuracy ({profile}; {_seed_note(int(ps['seed'].nunique()))}; "
                     "trace = classification and IR both correct)", y=1.06, fontsize=11)
        _legend(fig, all_conds)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        return _save(fig, name, profile, out_dir)


def fig_contingency_heatmaps(items: pd.DataFrame, profile: str, out_dir: str | Path | None = None,
                             synthetic: bool | Mapping[str, bool] | None = None,
                             step: str = "trace") -> PathList:
    """The answer x trace 2x2 tables of the conditions with a trace target, summed over
    seeds: rows = (model, condition), columns = datasets. Cells show counts and the share
    of n; titles give P(A and T), P(A|T), P(A|not T), Yates' chi-square and phi of the
    summed table (descriptive; per-seed tests are in the association table)."""
    import matplotlib.pyplot as plt

    name = "contingency_heatmaps"
    stats.validate_items(items)
    pt = stats.pooled_tables(items, step)
    if pt.empty:
        return _empty(name, profile, out_dir, "no condition with a trace target in these items")
    dss = stats.datasets_present(pt)
    synth = synthetic_flags(profile, dss, synthetic)
    rows = list(dict.fromkeys(zip(pt["model"], pt["condition"])))
    step_lab = stats.STEP_LABELS[step]
    with _style():
        fig, axes = _grid(len(rows), len(dss), 3.3, 2.9)
        for i, (model, cond) in enumerate(rows):
            for j, ds in enumerate(dss):
                ax = axes[i, j]
                r = pt[(pt["dataset"] == ds) & (pt["model"] == model) & (pt["condition"] == cond)]
                if r.empty:
                    ax.axis("off")
                    ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", color="#777777")
                    continue
                r = r.iloc[0]
                tab = np.asarray(r["table"])
                share = tab / max(tab.sum(), 1)
                ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
                for (a, b), v in np.ndenumerate(tab):
                    ax.text(b, a, f"{v}\n{100 * share[a, b]:.1f}%", ha="center", va="center",
                            fontsize=8.5, color="white" if share[a, b] > 0.55 else "#111111")
                ax.set_xticks([0, 1], [f"{step_lab} ✓", f"{step_lab} ✗"], fontsize=8)
                ax.set_yticks([0, 1], ["answer ✓", "answer ✗"], fontsize=8)
                ax.grid(False)
                fmt = lambda v, f, k=1.0, u="": "n/a" if _nan(v) else format(k * v, f) + u  # noqa: E731
                ax.set_title(f"{dataset_label(ds, synth[ds])}\n{model} · {cond} (n={r['n']}, "
                             f"{r['n_seeds']} seed{'s' if r['n_seeds'] > 1 else ''})", fontsize=8.5)
                ax.set_xlabel(f"P(A∧T)={fmt(r['joint'], '.1f', 100, '%')}  "
                              f"P(A|T)={fmt(r['p_a_given_t'], '.1f', 100, '%')}  "
                              f"P(A|¬T)={fmt(r['p_a_given_not_t'], '.1f', 100, '%')}\n"
                              f"χ² Yates={fmt(r['chi2_yates'], '.2f')} (crit {stats.CHI2_CRIT:.3f})"
                              f"  φ={fmt(r['phi'], '.3f')}", fontsize=7.5)
        fig.suptitle(f"Answer × {step_lab} contingency tables ({profile}; summed over seeds)",
                     y=1.01, fontsize=11)
        fig.tight_layout()
        return _save(fig, name, profile, out_dir)


def fig_forest_phi_or(items: pd.DataFrame, profile: str, out_dir: str | Path | None = None,
                      synthetic: bool | Mapping[str, bool] | None = None,
                      step: str = "trace") -> PathList:
    """Forest plot, one row per run (dataset, model, condition, seed) with a trace target:
    phi with its Fisher-z interval (left) and the odds ratio with Woolf's interval (right,
    log scale; hollow = Haldane-corrected) with the CMH odds ratio pooled over categories
    (diamond). Intervals beyond [0.01, 100] are clipped and marked with an arrow; an
    infinite or zero odds ratio is drawn on the clip edge."""
    import matplotlib.pyplot as plt

    name = "forest_phi_or"
    stats.validate_items(items)
    at = stats.association_table(items, step)
    if at.empty:
        return _empty(name, profile, out_dir, "no condition with a trace target in these items")
    synth = synthetic_flags(profile, stats.datasets_present(at), synthetic)
    multi_model = at["model"].nunique() > 1
    labels = [f"{dataset_label(r.dataset, synth[r.dataset])} · "
              + (f"{r.model} · " if multi_model else "") + f"{r.condition} · s{r.seed}"
              for r in at.itertuples()]
    y = np.arange(len(at))[::-1]
    lim = (1e-2, 1e2)
    with _style():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 1.2 + 0.28 * len(at)), sharey=True)
        for yy, r in zip(y, at.itertuples()):
            col = condition_color(r.condition)
            if not math.isnan(r.phi):
                ax1.errorbar(r.phi, yy, xerr=[[r.phi - r.phi_lo], [r.phi_hi - r.phi]], fmt="o",
                             color=col, ms=4, capsize=2, elinewidth=1)
            else:
                ax1.text(0, yy, "undefined", va="center", ha="center", fontsize=7, color="#777777")
            if not math.isnan(r.odds_ratio):
                o, lo, hi = (float(np.clip(v, *lim)) for v in (r.odds_ratio, r.or_lo, r.or_hi))
                ax2.errorbar(o, yy, xerr=[[o - lo], [hi - o]], fmt="o", color=col, ms=4, capsize=2,
                             elinewidth=1, mfc="white" if r.or_haldane else col)
                if r.or_lo < lim[0]:
                    ax2.annotate("", (lim[0], yy), (lim[0] * 1.8, yy), arrowprops=dict(arrowstyle="->", color=col))
                if r.or_hi > lim[1]:
                    ax2.annotate("", (lim[1], yy), (lim[1] / 1.8, yy), arrowprops=dict(arrowstyle="->", color=col))
            if not math.isnan(r.cmh_or):  # an infinite / zero pooled OR sits on the clip edge
                ax2.plot(float(np.clip(r.cmh_or, *lim)), yy - 0.3, marker="D", ms=4, color=col,
                         mec="#222222", mew=0.5, ls="none")
        ax1.axvline(0, color="#444444", lw=0.8, ls="--")
        ax2.axvline(1, color="#444444", lw=0.8, ls="--")
        ax1.set_yticks(y, labels, fontsize=7.5)
        ax1.set_xlabel("φ (answer × trace) with 95% CI")
        ax1.set_xlim(-1.05, 1.05)
        ax2.set_xscale("log")
        ax2.set_xlim(lim[0] * 0.8, lim[1] * 1.25)
        ax2.set_xlabel("odds ratio, 95% CI (◇ = CMH pooled over categories; hollow = Haldane 0.5)")
        height = fig.get_size_inches()[1]
        fig.suptitle(f"Association of answer and {stats.STEP_LABELS[step]} correctness per run ({profile})",
                     fontsize=11, y=1 - 0.05 / height)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))
        return _save(fig, name, profile, out_dir)


def fig_accuracy_by_category(items: pd.DataFrame, profile: str, out_dir: str | Path | None = None,
                             synthetic: bool | Mapping[str, bool] | None = None) -> PathList:
    """Answer exact match per category (CoTempQA scenario, MARCO query type, bAbI task) and
    condition: one full-width panel per (dataset, model); tick labels give items per seed."""
    name = "accuracy_by_category"
    stats.validate_items(items)
    ps = stats.per_seed_accuracy(items, by=("dataset", "model", "condition", "seed", "category"))
    dss, models = stats.datasets_present(items), sorted(items["model"].unique())
    synth = synthetic_flags(profile, dss, synthetic)
    panels = [(ds, m) for ds in dss for m in models]
    ncat = int(items.groupby("dataset")["category"].nunique().max())
    all_conds = stats.conditions_present(items)
    width = float(np.clip(1.5 + 0.16 * ncat * len(all_conds), 6.5, 16))
    with _style():
        fig, axes = _grid(len(panels), 1, width, 2.9, sharey=True)
        for i, (ds, model) in enumerate(panels):
            ax = axes[i, 0]
            g = ps[(ps["dataset"] == ds) & (ps["model"] == model)]
            conds = stats.conditions_present(g)
            cats = sorted(g["category"].unique(), key=str)
            w = 0.84 / max(len(all_conds), 1)  # one slot per condition, the same in every panel
            for xc, cat in enumerate(cats):
                for c in conds:
                    k = all_conds.index(c)
                    gc = g[(g["condition"] == c) & (g["category"] == cat)]
                    _draw_bar(ax, xc - 0.42 + w * (k + 0.5), w * 0.95, gc["answer_em"].to_numpy(), c)
            ticks = [f"{cat}\nn={int(g.loc[g['category'] == cat, 'n'].max())}" for cat in cats]
            ax.set_xticks(range(len(cats)), ticks, rotation=20 if ncat > 6 else 0,
                          ha="right" if ncat > 6 else "center", fontsize=7.5)
            ax.set_ylim(0, 105)
            ax.set_title(f"{dataset_label(ds, synth[ds])} · {model}", fontsize=10)
            ax.set_ylabel("answer EM (%)")
            if not len(g):
                ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", color="#777777")
        height = fig.get_size_inches()[1]
        fig.suptitle(f"Answer accuracy by category ({profile}; {_seed_note(int(ps['seed'].nunique()))}; "
                     "n = items per seed)", y=1 - 0.05 / height, fontsize=11)
        _legend(fig, all_conds, y=1 - 0.3 / height)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / height))
        return _save(fig, name, profile, out_dir)


def fig_key_steps(items: pd.DataFrame, profile: str, out_dir: str | Path | None = None,
                  synthetic: bool | Mapping[str, bool] | None = None) -> PathList:
    """Share of key tokens in the dual traces (EDIT's key steps: tokens where a problem's
    correct and incorrect traces differ under the token-level edit alignment), per dataset
    and model, for the correct and the incorrect trace; EDIT's 4.7% for free-form CoT as a
    reference line. Read from the ``krsl`` runs' metrics.json (items only pick the runs)."""
    import json

    name = "key_steps"
    runs = items[items["condition"] == "krsl"][["dataset", "model", "seed"]].drop_duplicates()
    rows = []
    for r in runs.itertuples():
        m = paths.run_dir(profile, r.dataset, r.model, "krsl", int(r.seed)) / "metrics.json"
        if m.exists():
            d = json.loads(m.read_text())
            for side in ("correct", "incorrect"):
                rows.append({"dataset": r.dataset, "model": r.model, "seed": r.seed, "trace": side,
                             "share": d.get(f"key_share_{side}", np.nan),
                             "n_key": d.get(f"key_tokens_{side}", {}).get("n_key")})
    if not rows:
        return _empty(name, profile, out_dir, "no krsl run with metrics.json in this profile")
    df = pd.DataFrame(rows)
    dss = [d for d in stats.datasets_present(items) if d in set(df["dataset"])]
    synth = synthetic_flags(profile, dss, synthetic)
    models = sorted(df["model"].unique())
    with _style():
        fig, axes = _grid(1, len(models), 1.6 + 1.7 * len(dss), 3.4, sharey=True)
        for j, model in enumerate(models):
            ax = axes[0, j]
            for k, side in enumerate(("correct", "incorrect")):
                for x, ds in enumerate(dss):
                    v = df[(df["model"] == model) & (df["dataset"] == ds) & (df["trace"] == side)]["share"]
                    _draw_bar(ax, x - 0.2 + 0.4 * k, 0.38, v.to_numpy(), side)
            ax.axhline(4.7, color="#444444", ls="--", lw=1)
            ax.text(len(dss) - 0.5, 4.7, "EDIT: 4.7% of CoT tokens", ha="right", va="center", fontsize=8,
                    bbox=dict(facecolor="white", edgecolor="none", pad=1.5))
            ax.set_xticks(range(len(dss)), [dataset_label(d, synth[d]) for d in dss], fontsize=8.5)
            ax.set_ylabel("key tokens (% of target tokens)")
            ax.set_title(model, fontsize=10)
        fig.suptitle(f"Key steps located in the dual traces ({profile})", fontsize=11)
        _legend(fig, ["correct", "incorrect"], y=0.93, title="trace of the dual pair")
        fig.tight_layout(rect=(0, 0, 1, 0.85))
        return _save(fig, name, profile, out_dir)


FIGURES: dict[str, Callable[..., PathList]] = {
    "accuracy_by_condition": fig_accuracy_by_condition,
    "step_accuracy": fig_step_accuracy,
    "contingency_heatmaps": fig_contingency_heatmaps,
    "forest_phi_or": fig_forest_phi_or,
    "accuracy_by_category": fig_accuracy_by_category,
    "key_steps": fig_key_steps,
}


def make_figures(names: Sequence[str], profile: str, items: pd.DataFrame | None = None,
                 out_dir: str | Path | None = None,
                 synthetic: bool | Mapping[str, bool] | None = None) -> dict[str, PathList]:
    """Draw the figures ``names`` (``all`` = every one); items default to
    ``results/<profile>/items.parquet``."""
    names = list(FIGURES) if "all" in names else list(names)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; known: {list(FIGURES)} or 'all'")
    if items is None:
        items = stats.load_items(profile)
    return {n: FIGURES[n](items, profile, out_dir=out_dir, synthetic=synthetic) for n in names}


def main(argv: Sequence[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    ap = argparse.ArgumentParser(prog="python -m helpers.figures",
                                 description="Draw the study's figures from results/<profile>/items.parquet.")
    ap.add_argument("names", nargs="+", metavar="NAME", help=f"{', '.join(FIGURES)} or all")
    ap.add_argument("--profile", required=True, help="smoke | quick | paper")
    ap.add_argument("--out-dir", default=None, help="folder for the figures (default figures/<profile>)")
    args = ap.parse_args(argv)
    bad = [n for n in args.names if n != "all" and n not in FIGURES]
    if bad:
        ap.error(f"unknown figure(s) {bad}; choose from {list(FIGURES)} or all")
    try:
        items = stats.load_items(args.profile)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = make_figures(args.names, args.profile, items=items, out_dir=args.out_dir)
    for n, ps in out.items():
        print(f"{n}: " + ", ".join(str(p) for p in ps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
