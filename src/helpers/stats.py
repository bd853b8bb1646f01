"""Association statistics between answer correctness and trace (step) correctness.

The study asks whether a correct reasoning trace goes with a correct answer. For every run
(dataset, model, condition, seed) the test items give a 2x2 table

    [[A and T,     A and not T],
     [not A and T, not A and not T]]

with A = the answer is correct (``answer_em``) and T = a step of the trace is correct:
the classification step (``cls_correct``), the IR step (``ir_exact``) or the whole trace
(``trace_correct``), and the same three under the original study's ``compat`` scoring (only
where ``compat_evaluated``).

From a table this module reports the joint share P(A and T) (the paper's "28%" for the pooled
CoTempQA Qwen table), the conditionals P(A | T) and P(A | not T) with Wilson intervals,
Pearson's chi-square with and without Yates' continuity correction, Fisher's exact test,
phi with an interval and the odds ratio with an interval. Categories are pooled with the
Cochran-Mantel-Haenszel estimator (never by averaging percentages); conditions are compared
on the same test items with McNemar's test (Cochran's Q and Holm's correction when there are
more than two); seeds are summarised by their mean and a t-interval.

Methods, stated once:

* Wilson score intervals for proportions (statsmodels ``proportion_confint``); an empty
  denominator gives NaN.
* phi = (ad - bc) / sqrt(r1 r2 c1 c2), the Pearson correlation of the two 0/1 indicators;
  its interval is the Fisher z interval tanh(atanh(phi) +- z / sqrt(n - 3)). This treats phi
  as a correlation coefficient; for binary data it is an approximation (phi is bounded by the
  margins), adequate for the |phi| < 0.3 and n in the hundreds seen here. NaN when a row or
  column total is 0 (phi undefined) or n <= 3.
* Odds ratio (ad) / (bc) with Woolf's log interval exp(log OR +- z sqrt(1/a + 1/b + 1/c + 1/d)).
  When any cell is 0, 0.5 is added to every cell first (Haldane-Anscombe correction) and
  ``or_haldane`` is True; NaN when a row or column total is 0.
* Chi-square from ``scipy.stats.chi2_contingency`` (df = 1), compared with the 5% critical
  value 3.841 that the paper uses; NaN when a row or column total is 0 (no expected counts).
* Fisher's exact test, two-sided (``scipy.stats.fisher_exact``).
* CMH: ``statsmodels.stats.contingency_tables.StratifiedTable`` (pooled odds ratio, its
  interval, the test of a common odds ratio of 1); the Breslow-Day homogeneity test is
  computed in :func:`breslow_day` (statsmodels' version fails when the pooled OR is 1).
  Strata with a zero row or column total carry no information about the association and
  are dropped (counted).
* McNemar: exact binomial test when the discordant pairs number fewer than 25, otherwise the
  chi-square statistic with continuity correction (statsmodels ``mcnemar``).
"""
from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import conditions as C
from . import paths, qa

ALPHA = 0.05
CHI2_CRIT = float(sps.chi2.ppf(1 - ALPHA, 1))  # 3.841: df = 1, alpha = 0.05
MCNEMAR_EXACT_BELOW = 25  # discordant pairs: exact binomial below this, chi-square from it on

# The conditions' display order, and which have a trace whose steps are scored, are read
# from the one table of conditions (helpers.conditions: ``order``, ``has_trace``,
# ``steps_scored``); conditions not in it come after, sorted.


def dataset_order() -> list[str]:
    """The datasets in the registry's order (helpers.qa)."""
    return list(qa.names())


def display_name(dataset: str) -> str:
    """A dataset's display name (its module's ``display_name``; unknown: the name itself)."""
    return qa.get(dataset).display_name if dataset in qa.names() else dataset

#: the steps that can be crossed with the answer: name -> (items column, compat-only)
STEPS: dict[str, tuple[str, bool]] = {
    "cls": ("cls_correct", False),
    "ir": ("ir_exact", False),
    "trace": ("trace_correct", False),
    "cls_compat": ("cls_correct_compat", True),
    "ir_compat": ("ir_correct_compat", True),
    "trace_compat": ("trace_correct_compat", True),
}
STEP_LABELS = {"cls": "classification", "ir": "IR", "trace": "trace",
               "cls_compat": "classification (compat)", "ir_compat": "IR (compat)",
               "trace_compat": "trace (compat)"}

KEYS = ["dataset", "model", "condition", "seed"]
REQUIRED_COLUMNS = KEYS + ["id", "category", "answer_em", "answer_f1", "has_trace_target",
                           "cls_correct", "ir_exact", "trace_correct"]


# --------------------------------------------------------------------------- input checks

def _as_bool(values: Any, name: str = "values") -> np.ndarray:
    """A boolean numpy array; missing values or non-boolean entries raise."""
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    na = s.isna()
    if na.any():
        raise ValueError(f"{name}: {int(na.sum())} missing value(s) (first at row "
                         f"{s.index[na.to_numpy()][0]!r}); a 2x2 table needs every item scored")
    if s.dtype == bool or str(s.dtype) == "boolean":
        return s.to_numpy(dtype=bool)
    ok = s.isin([True, False, 0, 1])
    if not ok.all():
        bad = s[~ok.to_numpy()]
        raise ValueError(f"{name}: non-boolean value {bad.iloc[0]!r} at row {bad.index[0]!r}")
    return s.astype(bool).to_numpy()


def validate_items(items: pd.DataFrame, name: str = "items") -> pd.DataFrame:
    """Check the columns of ``items.parquet`` and that (dataset, model, condition, seed, id)
    is unique; returns ``items`` unchanged. Raises ValueError naming what is wrong."""
    missing = [c for c in REQUIRED_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing} (see docs/architecture.md, "
                         f"'items.parquet')")
    dup = items.duplicated(KEYS + ["id"], keep=False)
    if dup.any():
        first = items.loc[dup, KEYS + ["id"]].iloc[0].to_dict()
        raise ValueError(f"{name}: {int(dup.sum())} rows share a (dataset, model, condition, "
                         f"seed, id) key, e.g. {first}")
    return items


def load_items(profile: str) -> pd.DataFrame:
    """``results/<profile>/items.parquet``, validated; a clear error when it is missing."""
    p = paths.results_dir(profile) / "items.parquet"
    if not p.exists():
        raise FileNotFoundError(
            f"{p} not found: evaluate first (`make eval PROFILE={profile}`, notebook 05_eval)")
    return validate_items(pd.read_parquet(p), name=str(p))


def synthetic_flags(profile: str, datasets: Sequence[str],
                    synthetic: bool | Mapping[str, bool] | None = None) -> dict[str, bool]:
    """Whether each dataset's problems are all generated (its label then says so).

    ``synthetic`` wins when given (one bool for all datasets, or per dataset). Otherwise
    ``data/<profile>/data_card.json`` is read: a per-dataset entry (``{"datasets": {name:
    {...}}}`` or ``{name: {...}}``) with a boolean ``synthetic`` or a ``source`` /
    ``sources`` that are all ``synthetic``; or a top-level ``data_source``. Without a card,
    the profile's ``data_source`` is used when the profile file exists. Unknown: False."""
    if isinstance(synthetic, bool):
        return {d: synthetic for d in datasets}
    if isinstance(synthetic, Mapping):
        return {d: bool(synthetic.get(d, False)) for d in datasets}
    flags = {d: False for d in datasets}
    card_path = paths.data_dir(profile) / "data_card.json"
    if card_path.exists():
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{card_path}: unreadable data card ({e})") from e
        per = card.get("datasets", card) if isinstance(card, dict) else {}
        for d in datasets:
            entry = per.get(d) if isinstance(per, dict) else None
            if isinstance(entry, dict):
                if isinstance(entry.get("synthetic"), bool):
                    flags[d] = entry["synthetic"]
                    continue
                src = entry.get("sources", entry.get("source"))
                if isinstance(src, str):
                    src = [src]
                if isinstance(src, (list, dict)) and len(src):
                    vals = list(src.keys()) if isinstance(src, dict) else src
                    flags[d] = all(str(s).startswith("synthetic") for s in vals)
                    continue
            if isinstance(card, dict) and card.get("data_source") is not None:
                flags[d] = card["data_source"] == "synthetic"
        return flags
    try:
        from . import config  # noqa: PLC0415

        if config.load_profile(profile).get("data_source") == "synthetic":
            return {d: True for d in datasets}
    except FileNotFoundError:
        pass
    return flags


def dataset_label(dataset: str, synthetic: bool = False) -> str:
    label = display_name(dataset)
    return f"{label} (synthetic)" if synthetic else label


def answer_only_conditions() -> tuple[str, ...]:
    """Conditions with a trace target whose steps are not scored (the teacher family's free
    prose: ``has_trace`` and not ``steps_scored`` in :mod:`helpers.conditions`)."""
    return C.names(has_trace=True, steps_scored=False)


def _order(values: Iterable[Any], order: Sequence[Any]) -> list[Any]:
    """Unique ``values``, those in ``order`` first in that order, the rest sorted."""
    vals = list(dict.fromkeys(values))
    known = [v for v in order if v in vals]
    return known + sorted((v for v in vals if v not in order), key=str)


def conditions_present(items: pd.DataFrame, trace_only: bool = False) -> list[str]:
    conds = C.order(items["condition"].unique())
    if trace_only:
        traced = set(_trace_items(items)["condition"].unique())
        conds = [c for c in conds if c in traced]
    return conds


def datasets_present(items: pd.DataFrame) -> list[str]:
    return _order(items["dataset"].unique(), dataset_order())


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Sort rows by dataset, model, condition (display order), seed where present."""
    if df.empty:
        return df.reset_index(drop=True)
    keys = []
    tmp = df.copy()
    if "dataset" in tmp:
        rank = {d: i for i, d in enumerate(_order(tmp["dataset"].unique(), dataset_order()))}
        tmp["_d"] = tmp["dataset"].map(rank)
        keys.append("_d")
    if "model" in tmp:
        keys.append("model")
    if "condition" in tmp:
        rank = {c: i for i, c in enumerate(C.order(tmp["condition"].unique()))}
        tmp["_c"] = tmp["condition"].map(rank)
        keys.append("_c")
    for k in ("step", "seed", "category"):
        if k in tmp:
            keys.append(k)
    tmp = tmp.sort_values(keys, kind="stable")
    return tmp.drop(columns=[k for k in ("_d", "_c") if k in tmp]).reset_index(drop=True)


# --------------------------------------------------------------------------- one 2x2 table

def table2x2(a: Any, t: Any) -> np.ndarray:
    """The 2x2 table [[A&T, A&~T], [~A&T, ~A&~T]] of two equally long boolean vectors
    (A = answer correct, T = step correct). Missing values raise."""
    a = _as_bool(a, "answer")
    t = _as_bool(t, "step")
    if a.shape != t.shape:
        raise ValueError(f"answer and step differ in length: {a.shape} vs {t.shape}")
    return np.array([[np.sum(a & t), np.sum(a & ~t)],
                     [np.sum(~a & t), np.sum(~a & ~t)]], dtype=np.int64)


def _check_table(table: Any) -> np.ndarray:
    tab = np.asarray(table)
    if tab.shape != (2, 2):
        raise ValueError(f"a 2x2 table is needed, got shape {tab.shape}")
    if np.any(tab < 0) or not np.all(np.equal(np.mod(tab, 1), 0)):
        raise ValueError(f"table cells must be non-negative counts, got {tab.tolist()}")
    return tab.astype(np.int64)


def wilson(k: float, n: float, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(k/n, lower, upper) with the Wilson score interval; NaNs when n = 0."""
    if n <= 0:
        return (math.nan, math.nan, math.nan)
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return (k / n, float(lo), float(hi))


def association(table: Any, alpha: float = ALPHA) -> dict[str, Any]:
    """Every association statistic of one 2x2 table [[A&T, A&~T], [~A&T, ~A&~T]].

    Keys: ``n``; the cells ``a_t, a_nt, na_t, na_nt``; the margins ``n_t, n_not_t``
    (items whose step is correct / incorrect); ``p_answer``, ``p_step`` (marginal
    accuracies); ``joint`` = P(A and T) with ``joint_lo/hi``; ``p_a_given_t`` =
    P(A | T) and ``p_a_given_not_t`` = P(A | not T), each with ``_lo/_hi`` (Wilson);
    ``chi2, chi2_p`` (no continuity correction) and ``chi2_yates, chi2_yates_p``;
    ``chi2_crit`` (3.841) and the booleans ``chi2_sig``, ``chi2_yates_sig`` (statistic
    above it); ``fisher_p``; ``phi, phi_lo, phi_hi`` (Fisher z interval); ``odds_ratio,
    or_lo, or_hi`` (Woolf) and ``or_haldane`` (0.5 added to each cell because one was 0);
    ``note`` says why a statistic is NaN.
    """
    tab = _check_table(table)
    (a, b), (c, d) = tab.tolist()
    n = a + b + c + d
    r1, r2, c1, c2 = a + b, c + d, a + c, b + d
    z = float(sps.norm.ppf(1 - alpha / 2))
    notes: list[str] = []
    out: dict[str, Any] = {"n": n, "a_t": a, "a_nt": b, "na_t": c, "na_nt": d,
                           "n_t": c1, "n_not_t": c2}
    out["p_answer"] = r1 / n if n else math.nan
    out["p_step"] = c1 / n if n else math.nan
    out["joint"], out["joint_lo"], out["joint_hi"] = wilson(a, n, alpha)
    out["p_a_given_t"], out["p_a_given_t_lo"], out["p_a_given_t_hi"] = wilson(a, c1, alpha)
    out["p_a_given_not_t"], out["p_a_given_not_t_lo"], out["p_a_given_not_t_hi"] = wilson(b, c2, alpha)
    if c1 == 0:
        notes.append("no item with a correct step: P(A|T) undefined")
    if c2 == 0:
        notes.append("no item with an incorrect step: P(A|not T) undefined")

    degenerate = min(r1, r2, c1, c2) == 0
    if degenerate:
        notes.append("a row or column total is 0: chi-square, phi and odds ratio undefined")
        out.update(chi2=math.nan, chi2_p=math.nan, chi2_yates=math.nan, chi2_yates_p=math.nan)
    else:
        s0, p0, _, _ = sps.chi2_contingency(tab, correction=False)
        s1, p1, _, _ = sps.chi2_contingency(tab, correction=True)
        out.update(chi2=float(s0), chi2_p=float(p0), chi2_yates=float(s1), chi2_yates_p=float(p1))
    out["chi2_crit"] = CHI2_CRIT
    out["chi2_sig"] = bool(out["chi2"] > CHI2_CRIT) if not degenerate else False
    out["chi2_yates_sig"] = bool(out["chi2_yates"] > CHI2_CRIT) if not degenerate else False
    out["fisher_p"] = float(sps.fisher_exact(tab)[1]) if n else math.nan

    if degenerate:
        out.update(phi=math.nan, phi_lo=math.nan, phi_hi=math.nan)
    else:
        phi = (a * d - b * c) / math.sqrt(float(r1) * r2 * c1 * c2)
        out["phi"] = phi
        if n > 3 and abs(phi) < 1:
            zf, se = math.atanh(phi), 1 / math.sqrt(n - 3)
            out["phi_lo"], out["phi_hi"] = math.tanh(zf - z * se), math.tanh(zf + z * se)
        elif n > 3:  # |phi| = 1: the transform is infinite; the interval collapses to the point
            out["phi_lo"] = out["phi_hi"] = phi
        else:
            out["phi_lo"] = out["phi_hi"] = math.nan
            notes.append("n <= 3: no interval for phi")

    haldane = min(a, b, c, d) == 0 and not degenerate
    if degenerate:  # a zero margin: the table says nothing about the odds ratio
        out.update(odds_ratio=math.nan, or_lo=math.nan, or_hi=math.nan)
    else:
        aa, bb, cc, dd = ((x + 0.5) for x in (a, b, c, d)) if haldane else (a, b, c, d)
        lor = math.log(aa * dd / (bb * cc))
        se = math.sqrt(1 / aa + 1 / bb + 1 / cc + 1 / dd)
        out.update(odds_ratio=math.exp(lor), or_lo=math.exp(lor - z * se), or_hi=math.exp(lor + z * se))
    out["or_haldane"] = bool(haldane)
    if haldane:
        notes.append("a cell is 0: odds ratio with 0.5 added to every cell (Haldane-Anscombe)")
    out["note"] = "; ".join(notes)
    return out


# --------------------------------------------------------------------------- strata (CMH)

def cmh(tables: Sequence[Any], alpha: float = ALPHA) -> dict[str, Any]:
    """Cochran-Mantel-Haenszel pooling of 2x2 tables (one per stratum, e.g. per category).

    Keys: ``n_strata`` (given), ``n_strata_used`` (informative: no zero row/column total),
    ``n``; ``or_mh`` (Mantel-Haenszel pooled odds ratio) with ``or_mh_lo/hi`` (Robins-
    Breslow-Greenland variance, statsmodels); ``cmh_stat, cmh_p`` (test of a common odds
    ratio of 1, no continuity correction); ``bd_stat, bd_p`` (Breslow-Day test that the
    odds ratios are equal across strata, :func:`breslow_day`; NaN with fewer than two
    informative strata or an infinite / zero pooled odds ratio); ``note``.
    """
    from statsmodels.stats.contingency_tables import StratifiedTable

    tabs = [_check_table(t) for t in tables]
    used = [t for t in tabs if min(t.sum(0).min(), t.sum(1).min()) > 0 and t.sum() >= 2]
    out: dict[str, Any] = {"n_strata": len(tabs), "n_strata_used": len(used),
                           "n": int(sum(t.sum() for t in tabs))}
    nan = dict(or_mh=math.nan, or_mh_lo=math.nan, or_mh_hi=math.nan, cmh_stat=math.nan,
               cmh_p=math.nan, bd_stat=math.nan, bd_p=math.nan)
    notes = []
    if len(used) < len(tabs):
        notes.append(f"{len(tabs) - len(used)} stratum/strata with a zero row or column total dropped")
    if not used:
        notes.append("no informative stratum")
        return {**out, **nan, "note": "; ".join(notes)}
    st = StratifiedTable([t.astype(float) for t in used])
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        or_mh = float(st.oddsratio_pooled)
        lo, hi = st.oddsratio_pooled_confint(alpha=alpha)
        null = st.test_null_odds(correction=False)
        if len(used) >= 2:
            bd_stat, bd_p = breslow_day(used, or_mh)
        else:
            bd_stat = bd_p = math.nan
            notes.append("one informative stratum: no homogeneity test")
    out.update(or_mh=or_mh, or_mh_lo=float(lo), or_mh_hi=float(hi),
               cmh_stat=float(null.statistic), cmh_p=float(null.pvalue),
               bd_stat=bd_stat, bd_p=bd_p)
    if not np.isfinite(or_mh):
        notes.append("pooled odds ratio infinite or undefined (a zero in every stratum's off-diagonal or diagonal)")
    out["note"] = "; ".join(notes)
    return out


def breslow_day(tables: Sequence[Any], odds_ratio: float) -> tuple[float, float]:
    """Breslow-Day statistic and p-value (df = strata - 1, no Tarone adjustment) for the
    homogeneity of the strata's odds ratios around the common ``odds_ratio``.

    Same statistic as statsmodels' ``StratifiedTable.test_equal_odds``, computed here
    because that method divides by 1 - OR and returns NaN when the pooled OR is exactly 1
    (common with small, balanced tables): the expected first cell then is r1 c1 / n. NaN
    when the pooled OR is 0 or infinite, or an expected cell sits on its bound."""
    tabs = [np.asarray(t, dtype=float) for t in tables]
    if len(tabs) < 2 or not (np.isfinite(odds_ratio) and odds_ratio > 0):
        return (math.nan, math.nan)
    stat = 0.0
    for t in tabs:
        a = t[0, 0]
        r1, c1, n = t[0].sum(), t[:, 0].sum(), t.sum()
        lo, hi = max(0.0, r1 + c1 - n), min(r1, c1)
        if math.isclose(odds_ratio, 1.0, rel_tol=1e-12):
            e = r1 * c1 / n
        else:  # (1 - OR) e^2 + (n - r1 - c1 + OR (r1 + c1)) e - OR r1 c1 = 0, root in (lo, hi)
            qa, qb, qc = 1 - odds_ratio, n - r1 - c1 + odds_ratio * (r1 + c1), -odds_ratio * r1 * c1
            disc = math.sqrt(max(qb * qb - 4 * qa * qc, 0.0))
            roots = [(-qb + disc) / (2 * qa), (-qb - disc) / (2 * qa)]
            inside = [x for x in roots if lo - 1e-9 <= x <= hi + 1e-9]
            if not inside:
                return (math.nan, math.nan)
            e = inside[0]
        cells = [e, r1 - e, c1 - e, n - r1 - c1 + e]
        if min(cells) <= 0:
            return (math.nan, math.nan)
        var = 1 / sum(1 / x for x in cells)
        stat += (a - e) ** 2 / var
    return (float(stat), float(sps.chi2.sf(stat, len(tabs) - 1)))


# --------------------------------------------------------------------------- paired tests

def mcnemar(x_correct: Any, y_correct: Any) -> dict[str, Any]:
    """McNemar's test of two conditions scored on the same items (equal order).

    Keys: ``n``, ``both``, ``x_only`` (x right, y wrong), ``y_only``, ``neither``,
    ``acc_x``, ``acc_y``, ``diff`` (acc_x - acc_y), ``discordant``, ``method``
    (``exact`` binomial when discordant < 25, else ``chi2`` with continuity correction),
    ``statistic`` (for exact: min(x_only, y_only)), ``p``.
    """
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    x = _as_bool(x_correct, "x_correct")
    y = _as_bool(y_correct, "y_correct")
    if x.shape != y.shape:
        raise ValueError(f"paired vectors differ in length: {x.shape} vs {y.shape}")
    both, xo, yo, nei = (int(np.sum(x & y)), int(np.sum(x & ~y)), int(np.sum(~x & y)),
                         int(np.sum(~x & ~y)))
    n = len(x)
    disc = xo + yo
    out = {"n": n, "both": both, "x_only": xo, "y_only": yo, "neither": nei,
           "acc_x": x.mean() if n else math.nan, "acc_y": y.mean() if n else math.nan}
    out["diff"] = out["acc_x"] - out["acc_y"]
    out["discordant"] = disc
    if disc == 0:
        out.update(method="exact", statistic=0.0, p=1.0)
        return out
    exact = disc < MCNEMAR_EXACT_BELOW
    r = sm_mcnemar([[both, xo], [yo, nei]], exact=exact, correction=True)
    out.update(method="exact" if exact else "chi2", statistic=float(r.statistic), p=float(r.pvalue))
    return out


def cochrans_q(matrix: Any) -> dict[str, Any]:
    """Cochran's Q for k >= 2 conditions on the same items: ``matrix`` is items x conditions
    of 0/1 (correct). Keys: ``n``, ``k``, ``q``, ``df`` (k - 1), ``p``. When every item has
    the same score in all conditions Q is undefined and p is reported as 1.0."""
    from statsmodels.stats.contingency_tables import cochrans_q as sm_q

    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"Cochran's Q needs an items x conditions matrix with >= 2 columns, got {m.shape}")
    if m.size and not np.isin(m, [0, 1]).all():
        raise ValueError("Cochran's Q needs 0/1 entries")
    m = m.astype(int)
    n, k = m.shape
    rows = m.sum(1)
    if n == 0 or np.all((rows == 0) | (rows == k)):
        return {"n": n, "k": k, "q": 0.0, "df": k - 1, "p": 1.0}
    r = sm_q(m)
    return {"n": n, "k": k, "q": float(r.statistic), "df": int(r.df), "p": float(r.pvalue)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order. NaN p-values stay NaN and do
    not count towards the number of tests."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


# --------------------------------------------------------------------------- seeds

def seed_spread(values: Sequence[float], alpha: float = ALPHA) -> dict[str, Any]:
    """Mean over seeds with the sample SD and a t-interval. NaN values are left out and
    counted (``n_missing``); with one seed SD and interval are NaN (no spread to estimate),
    and likewise when a value is infinite (the mean is then infinite)."""
    v = np.asarray(list(values), dtype=float)
    miss = int(np.isnan(v).sum())
    v = v[~np.isnan(v)]
    n = len(v)
    out = {"n": n, "n_missing": miss, "mean": math.nan, "sd": math.nan, "lo": math.nan, "hi": math.nan}
    if n == 0:
        return out
    out["mean"] = float(v.mean())
    if not np.all(np.isfinite(v)):  # e.g. an infinite odds ratio: no finite spread
        return out
    if n >= 2:
        sd = float(v.std(ddof=1))
        h = float(sps.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        out.update(sd=sd, lo=out["mean"] - h, hi=out["mean"] + h)
    return out


def spread_table(df: pd.DataFrame, columns: Sequence[str], by: Sequence[str] = ("dataset", "model", "condition"),
                 alpha: float = ALPHA) -> pd.DataFrame:
    """Seed spread of ``columns`` of a per-seed table: one row per ``by`` group with
    ``n_seeds`` and, per column c, ``c`` (mean), ``c_sd``, ``c_lo``, ``c_hi``."""
    rows = []
    for key, g in df.groupby(list(by), sort=False, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = int(g["seed"].nunique()) if "seed" in g else len(g)
        for c in columns:
            s = seed_spread(g[c].to_numpy(dtype=float), alpha)
            row.update({c: s["mean"], f"{c}_sd": s["sd"], f"{c}_lo": s["lo"], f"{c}_hi": s["hi"]})
        rows.append(row)
    return sort_rows(pd.DataFrame(rows))


# --------------------------------------------------------------------------- tables over items

def step_frame(items: pd.DataFrame, step: str) -> tuple[pd.DataFrame, str]:
    """The rows of ``items`` on which ``step`` is scored, and its column. Compat steps keep
    only rows with ``compat_evaluated`` (the original scoring skipped the others)."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; one of {list(STEPS)}")
    col, compat = STEPS[step]
    if col not in items.columns:
        raise ValueError(f"items lack column {col!r} needed for step {step!r}")
    if compat:
        if "compat_evaluated" not in items.columns:
            raise ValueError("items lack column 'compat_evaluated' needed for compat steps")
        items = items[items["compat_evaluated"].fillna(False).astype(bool)]
    return items, col


def _trace_items(items: pd.DataFrame) -> pd.DataFrame:
    """The items whose trace steps were scored: a trace target, and not one of the
    answer-only conditions (``trace_scored`` where items carry it)."""
    keep = items["has_trace_target"].fillna(False).astype(bool) & ~items["condition"].isin(answer_only_conditions())
    if "trace_scored" in items.columns:
        keep &= items["trace_scored"].fillna(False).astype(bool)
    return items[keep]


_CMH_COLS = {"n_strata": "cmh_n_strata", "n_strata_used": "cmh_n_strata_used",
             "or_mh": "cmh_or", "or_mh_lo": "cmh_or_lo", "or_mh_hi": "cmh_or_hi",
             "cmh_stat": "cmh_stat", "cmh_p": "cmh_p", "bd_stat": "cmh_bd_stat",
             "bd_p": "cmh_bd_p", "note": "cmh_note"}


def association_table(items: pd.DataFrame, step: str | Sequence[str] = "trace",
                      alpha: float = ALPHA) -> pd.DataFrame:
    """One row per (step, dataset, model, condition, seed) for the conditions with a trace
    target: every key of :func:`association` on the table pooled over categories, plus the
    CMH statistics over the categories of that run (columns ``cmh_or``, ``cmh_or_lo``,
    ``cmh_or_hi``, ``cmh_stat``, ``cmh_p``, ``cmh_bd_stat``, ``cmh_bd_p``,
    ``cmh_n_strata``, ``cmh_n_strata_used``, ``cmh_note``; see :func:`cmh`). For compat steps,
    ``n_unevaluated`` counts the items the original scoring skipped."""
    steps = [step] if isinstance(step, str) else list(step)
    validate_items(items)
    rows = []
    for st in steps:
        all_trace = _trace_items(items)
        sub, col = step_frame(all_trace, st)
        total = all_trace.groupby(KEYS, sort=False).size()
        for key, g in sub.groupby(KEYS, sort=False):
            row = dict(zip(KEYS, key))
            row["step"] = st
            row.update(association(table2x2(g["answer_em"], g[col]), alpha))
            row["n_unevaluated"] = int(total.get(key, len(g)) - len(g))
            tabs, cats = [], []
            for cat, gc in g.groupby("category", sort=True):
                tabs.append(table2x2(gc["answer_em"], gc[col]))
                cats.append(cat)
            c = cmh(tabs, alpha)
            row.update({_CMH_COLS[k]: v for k, v in c.items() if k in _CMH_COLS})
            row["n_categories"] = len(cats)
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    first = ["step"] + KEYS
    return sort_rows(df[first + [c for c in df.columns if c not in first]])


def association_by_category(items: pd.DataFrame, step: str = "trace", alpha: float = ALPHA) -> pd.DataFrame:
    """As :func:`association_table` without CMH, one row per category of each run (the
    strata that CMH pools)."""
    validate_items(items)
    sub, col = step_frame(_trace_items(items), step)
    rows = []
    for key, g in sub.groupby(KEYS + ["category"], sort=False):
        row = dict(zip(KEYS + ["category"], key))
        row["step"] = step
        row.update(association(table2x2(g["answer_em"], g[col]), alpha))
        rows.append(row)
    return sort_rows(pd.DataFrame(rows))


def pooled_tables(items: pd.DataFrame, step: str = "trace") -> pd.DataFrame:
    """Per (dataset, model, condition) the 2x2 table summed over seeds (for display), with
    ``n_seeds`` and the association of the summed table. Summing seeds repeats items, so
    its tests are descriptive only; the per-seed rows of :func:`association_table` carry
    the inference."""
    validate_items(items)
    sub, col = step_frame(_trace_items(items), step)
    rows = []
    for key, g in sub.groupby(["dataset", "model", "condition"], sort=False):
        tab = table2x2(g["answer_em"], g[col])
        row = dict(zip(["dataset", "model", "condition"], key))
        row.update(step=step, n_seeds=int(g["seed"].nunique()), table=tab)
        row.update(association(tab))
        rows.append(row)
    return sort_rows(pd.DataFrame(rows))


ACC_METRICS = ["answer_em", "answer_f1", "rouge_l", "parse_ok", "cls_correct", "ir_exact",
               "trace_correct", "compat_coverage", "cls_correct_compat", "ir_correct_compat",
               "trace_correct_compat"]


def _mean_bool(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.astype(bool).mean()) if len(s) else math.nan


def per_seed_accuracy(items: pd.DataFrame, by: Sequence[str] = ("dataset", "model", "condition", "seed")) -> pd.DataFrame:
    """Accuracies of each run (or of each ``by`` group): ``n`` items, answer EM/F1,
    ROUGE-L (NaN unless scored), ``parse_ok`` (share of outputs that parsed), the step
    accuracies (``cls_correct``, ``ir_exact``, ``trace_correct``), and the compat ones on
    the ``compat_evaluated`` items with ``compat_coverage`` (their share)."""
    validate_items(items)
    rows = []
    for key, g in items.groupby(list(by), sort=False):
        row = dict(zip(by, key))
        row["n"] = len(g)
        row["answer_em"] = float(_as_bool(g["answer_em"], "answer_em").mean())
        row["answer_f1"] = float(pd.to_numeric(g["answer_f1"]).mean())
        row["rouge_l"] = (float(pd.to_numeric(g["rouge_l"]).mean())
                          if "rouge_l" in g and g["rouge_l"].notna().any() else math.nan)
        row["parse_ok"] = float((g["parse_status"] == "ok").mean()) if "parse_status" in g else math.nan
        # answer-only conditions (free-prose teacher traces): their steps are not scored
        unscored = bool(g["condition"].isin(answer_only_conditions()).all()) if "condition" in g else False
        for c in ("cls_correct", "ir_exact", "trace_correct"):
            row[c] = math.nan if unscored else float(_as_bool(g[c], c).mean())
        if "compat_evaluated" in g:
            ev = g["compat_evaluated"].fillna(False).astype(bool)
            row["compat_coverage"] = float(ev.mean())
            for c in ("cls_correct_compat", "ir_correct_compat", "trace_correct_compat"):
                row[c] = _mean_bool(g.loc[ev.to_numpy(), c]) if c in g else math.nan
        else:
            row.update(compat_coverage=math.nan, cls_correct_compat=math.nan,
                       ir_correct_compat=math.nan, trace_correct_compat=math.nan)
        rows.append(row)
    return sort_rows(pd.DataFrame(rows))


def accuracy_table(items: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per (dataset, model, condition): ``has_trace_target``, ``n_seeds``, ``n_items``
    (distinct test items), and for every metric of :func:`per_seed_accuracy` its mean over
    seeds with ``_sd``, ``_lo``, ``_hi`` (t-interval clipped to [0, 1]; NaN with one
    seed). Rows in display
    order, ``untrained`` first (the baseline)."""
    ps = per_seed_accuracy(items)
    out = spread_table(ps, ACC_METRICS, alpha=alpha)
    for c in ACC_METRICS:  # proportions: the t-interval is clipped to [0, 1]
        out[f"{c}_lo"] = out[f"{c}_lo"].clip(lower=0.0)
        out[f"{c}_hi"] = out[f"{c}_hi"].clip(upper=1.0)
    meta = items.groupby(["dataset", "model", "condition"], sort=False).agg(
        n_items=("id", "nunique"),
        has_trace_target=("has_trace_target", lambda s: bool(s.fillna(False).astype(bool).all())))
    out = out.merge(meta.reset_index(), on=["dataset", "model", "condition"], how="left")
    first = ["dataset", "model", "condition", "has_trace_target", "n_seeds", "n_items"]
    return sort_rows(out[first + [c for c in out.columns if c not in first]])


def _paired(items: pd.DataFrame, metric: str, conds: Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Items x conditions matrix of ``metric`` on the ids present in every condition, and
    the number of ids each condition has that some other lacks."""
    wide = items.pivot(index="id", columns="condition", values=metric)[list(conds)]
    complete = wide.notna().all(axis=1)
    unpaired = {c: int((wide[c].notna() & ~complete).sum()) for c in conds}
    return wide[complete], unpaired


def compare_conditions(items: pd.DataFrame, metric: str = "answer_em",
                       conditions: Sequence[str] | None = None,
                       pairs: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Conditions compared on the same test items, per (dataset, model, seed).

    For each pair (all pairs of the present ``conditions`` in display order unless
    ``pairs`` is given) a McNemar row (``test`` = ``mcnemar``, ``cond_x``, ``cond_y``, the
    keys of :func:`mcnemar`, ``p_holm`` = Holm over the pairs of that dataset/model/seed),
    and, when more than two conditions are present, one Cochran's Q row (``test`` =
    ``cochran_q``, ``cond_x`` = the conditions joined by ``,``). Items missing from one
    condition of a pair are left out of it and counted in ``n_unpaired``. ``metric`` is a
    boolean column (``answer_em``, ``trace_correct``, ...)."""
    validate_items(items)
    if metric not in items.columns:
        raise ValueError(f"items lack column {metric!r}")
    rows = []
    # conditions are compared only on a shared test set: the teacher family answers the
    # teacher set's test split (items column ``test_set``), every other condition the full one
    sets = items["test_set"].fillna("full") if "test_set" in items.columns else pd.Series("full", index=items.index)
    for (ds, model, seed, _), g in items.assign(_test_set=sets).groupby(["dataset", "model", "seed", "_test_set"],
                                                                        sort=False):
        present = conditions_present(g)
        conds = [c for c in (conditions or present) if c in present]
        if len(conds) < 2:
            continue
        prs = [p for p in (pairs or itertools.combinations(conds, 2)) if p[0] in conds and p[1] in conds]
        fam = []
        for cx, cy in prs:
            m, unp = _paired(g, metric, [cx, cy])
            r = mcnemar(m[cx].astype(bool), m[cy].astype(bool))
            fam.append({"dataset": ds, "model": model, "seed": seed, "metric": metric,
                        "test": "mcnemar", "cond_x": cx, "cond_y": cy,
                        "n_unpaired": unp[cx] + unp[cy], **r})
        for row, ph in zip(fam, holm([r["p"] for r in fam])):
            row["p_holm"] = ph
        rows.extend(fam)
        if len(conds) > 2:
            m, unp = _paired(g, metric, conds)
            q = cochrans_q(m.astype(bool).astype(int).to_numpy())
            rows.append({"dataset": ds, "model": model, "seed": seed, "metric": metric,
                         "test": "cochran_q", "cond_x": ",".join(conds), "cond_y": "",
                         "n_unpaired": sum(unp.values()), "n": q["n"], "statistic": q["q"],
                         "df": q["df"], "p": q["p"], "p_holm": q["p"],
                         "method": f"Q, df={q['df']}"})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for c in ("n", "both", "x_only", "y_only", "neither", "discordant", "df", "n_unpaired"):
        if c in df:
            df[c] = df[c].astype("Int64")
    cond_rank = {c: i for i, c in enumerate(C.names())}
    df["_t"] = (df["test"] == "cochran_q").astype(int)
    df["_x"] = df["cond_x"].map(cond_rank).fillna(len(cond_rank))
    df["_y"] = df["cond_y"].map(cond_rank).fillna(len(cond_rank))
    ds_rank = {d: i for i, d in enumerate(_order(df["dataset"].unique(), dataset_order()))}
    df["_d"] = df["dataset"].map(ds_rank)
    df = df.sort_values(["_d", "model", "seed", "_t", "_x", "_y"], kind="stable")
    return df.drop(columns=["_t", "_x", "_y", "_d"]).reset_index(drop=True)


# --------------------------------------------------------------------------- output

def _fmt(v: Any, floatfmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return format(float(v), floatfmt)
    return str(v)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured Markdown table of ``df`` (no index); NaN as an empty cell,
    floats with ``floatfmt``, pipes escaped."""
    cols = [str(c) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns]
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
             "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(_fmt(v, floatfmt)) for v in rec) + " |")
    return "\n".join(lines) + "\n"


def _ci(mean: float, lo: float, hi: float, pct: bool = True) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.3f}")
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return f(mean)
    return f"{f(mean)} [{f(lo)}, {f(hi)}]"


def accuracy_markdown(acc: pd.DataFrame) -> pd.DataFrame:
    """A readable version of :func:`accuracy_table`: percentages, '[lo, hi]' over seeds."""
    out = acc[["dataset", "model", "condition", "n_seeds", "n_items"]].copy()
    for c, label in [("answer_em", "answer EM %"), ("answer_f1", "answer F1 %"),
                     ("rouge_l", "ROUGE-L %"), ("parse_ok", "parsed %"),
                     ("cls_correct", "classification %"), ("ir_exact", "IR exact %"),
                     ("trace_correct", "trace %"), ("trace_correct_compat", "trace compat %")]:
        if c in acc and acc[c].notna().any():
            out[label] = [_ci(m, lo, hi) for m, lo, hi in zip(acc[c], acc[f"{c}_lo"], acc[f"{c}_hi"])]
    return out


def association_markdown(assoc: pd.DataFrame) -> pd.DataFrame:
    """A readable version of :func:`association_table`: the headline columns."""
    if assoc.empty:
        return assoc
    out = assoc[["step", "dataset", "model", "condition", "seed", "n"]].copy()
    out["table [[AT, A¬T], [¬AT, ¬A¬T]]"] = [
        f"[[{r.a_t}, {r.a_nt}], [{r.na_t}, {r.na_nt}]]" for r in assoc.itertuples()]
    out["P(A∧T) %"] = [_ci(*x) for x in zip(assoc.joint, assoc.joint_lo, assoc.joint_hi)]
    out["P(A|T) %"] = [_ci(*x) for x in zip(assoc.p_a_given_t, assoc.p_a_given_t_lo, assoc.p_a_given_t_hi)]
    out["P(A|¬T) %"] = [_ci(*x) for x in zip(assoc.p_a_given_not_t, assoc.p_a_given_not_t_lo,
                                            assoc.p_a_given_not_t_hi)]
    out["χ²"] = assoc["chi2"]
    out["χ² Yates"] = assoc["chi2_yates"]
    out[f"Yates > {CHI2_CRIT:.3f}"] = assoc["chi2_yates_sig"]
    out["Fisher p"] = assoc["fisher_p"]
    out["φ [CI]"] = [_ci(*x, pct=False) for x in zip(assoc.phi, assoc.phi_lo, assoc.phi_hi)]
    out["OR [CI]"] = [_ci(*x, pct=False) + (" (Haldane)" if h else "") if not math.isnan(x[0]) else ""
                      for *x, h in zip(assoc.odds_ratio, assoc.or_lo, assoc.or_hi, assoc.or_haldane)]
    out["CMH OR [CI]"] = [_ci(*x, pct=False) for x in zip(assoc.cmh_or, assoc.cmh_or_lo, assoc.cmh_or_hi)]
    out["CMH p"] = assoc["cmh_p"]
    out["Breslow-Day p"] = assoc["cmh_bd_p"]
    return out


def comparisons_markdown(comp: pd.DataFrame) -> pd.DataFrame:
    if comp.empty:
        return comp
    cols = ["dataset", "model", "seed", "metric", "test", "cond_x", "cond_y", "n", "acc_x",
            "acc_y", "x_only", "y_only", "method", "statistic", "p", "p_holm", "n_unpaired"]
    return comp[[c for c in cols if c in comp]]


def write_results(items: pd.DataFrame, profile: str, out_dir: str | Path | None = None,
                  synthetic: bool | Mapping[str, bool] | None = None) -> dict[str, Path]:
    """Write ``results/<profile>/{accuracy,association,comparisons}.{csv,md}``: the CSV files
    hold every column, the Markdown files the readable headline columns, with datasets of
    generated problems labelled "(synthetic)" (``synthetic`` as in :func:`synthetic_flags`).
    Association covers the classification, IR and trace steps (and trace under compat
    scoring when any item was compat-evaluated); comparisons are McNemar / Cochran's Q on
    answer EM. Returns {"accuracy_csv": path, "accuracy_md": path, ...}."""
    validate_items(items)
    flags = synthetic_flags(profile, datasets_present(items), synthetic)
    d = Path(out_dir) if out_dir is not None else paths.results_dir(profile)
    d.mkdir(parents=True, exist_ok=True)
    steps = ["cls", "ir", "trace"]
    if "compat_evaluated" in items and items["compat_evaluated"].fillna(False).astype(bool).any():
        steps.append("trace_compat")
    acc = accuracy_table(items)
    assoc = association_table(items, steps)
    comp = compare_conditions(items, "answer_em")
    written: dict[str, Path] = {}
    titles = {"accuracy": "Accuracy by condition (mean over seeds [95% t-interval])",
              "association": "Answer x step association (A = answer correct, T = step correct)",
              "comparisons": "Conditions compared on the same items (McNemar, Cochran's Q; Holm)"}
    for name, full, short in [("accuracy", acc, accuracy_markdown(acc)),
                              ("association", assoc, association_markdown(assoc)),
                              ("comparisons", comp, comparisons_markdown(comp))]:
        csv = d / f"{name}.csv"
        full.drop(columns=[c for c in ("table",) if c in full]).to_csv(csv, index=False)
        md = d / f"{name}.md"
        if not short.empty:
            short = short.assign(dataset=[dataset_label(x, flags.get(x, False)) for x in short["dataset"]])
        body = markdown_table(short) if not short.empty else "(no rows)\n"
        synth = [k for k, v in flags.items() if v]
        note = (f" Synthetic (generated) problems: {', '.join(synth)}." if synth else "")
        md.write_text(f"# {titles[name]}\n\nProfile `{profile}`; {len(full)} rows; "
                      f"every column in `{csv.name}`.{note}\n\n" + body)
        written[f"{name}_csv"] = csv
        written[f"{name}_md"] = md
    return written


def krsl_vs_correct(items: pd.DataFrame) -> pd.DataFrame:
    """KRSL against plain SFT on the trace set its step 1 trains on (``correct``), on the same
    test items, per dataset / model / seed: McNemar on trace accuracy (``trace_correct``) and
    answer accuracy (``answer_em``) (:func:`compare_conditions` with that one pair)."""
    base = C.get("krsl").derives_from[0]
    frames = [compare_conditions(items, metric=m, pairs=[(base, "krsl")]) for m in ("trace_correct", "answer_em")]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def __getattr__(name: str):
    # the display order under the name notebooks used (a view of helpers.conditions)
    if name == "CONDITION_ORDER":
        return list(C.names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
