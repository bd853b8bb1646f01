"""helpers.stats against values computed by hand (formulas written out here, not the
library calls the module uses)."""
from __future__ import annotations

import math
from math import comb

import numpy as np
import pandas as pd
import pytest

from helpers import stats

PAPER_QWEN = [[261, 248], [195, 245]]  # pooled CoTempQA, Qwen3-1.7B, correct traces (n = 949)


# ----------------------------------------------------------------------------- 2x2 tables

def test_table2x2_layout():
    a = [True, True, False, False, True, False]
    t = [True, False, True, False, True, False]
    tab = stats.table2x2(a, t)
    # [[A&T, A&~T], [~A&T, ~A&~T]]
    assert tab.tolist() == [[2, 1], [1, 2]]
    assert tab.sum() == 6


def test_table2x2_rejects_missing_and_mismatch():
    with pytest.raises(ValueError, match="missing"):
        stats.table2x2(pd.Series([True, None], dtype="boolean"), [True, False])
    with pytest.raises(ValueError, match="length"):
        stats.table2x2([True, False], [True])
    with pytest.raises(ValueError, match="non-boolean"):
        stats.table2x2(["yes", "no"], [True, False])


def test_paper_table_headline_values():
    r = stats.association(PAPER_QWEN)
    assert r["n"] == 949
    # the paper's "28%": the joint share of answer-correct and trace-correct items
    assert round(100 * r["joint"], 1) == 27.5
    assert round(100 * r["p_a_given_t"], 1) == 57.2          # 261 / 456
    assert round(100 * r["p_a_given_not_t"], 1) == 50.3      # 248 / 493
    assert round(r["chi2_yates"], 2) == 4.30                 # the paper's own table gives 4.30 > 3.841
    assert r["chi2_yates"] > r["chi2_crit"] and r["chi2_yates_sig"]
    assert round(r["phi"], 3) == 0.069
    assert r["chi2_crit"] == pytest.approx(3.841, abs=5e-4)


def test_paper_table_against_formulas():
    (a, b), (c, d) = PAPER_QWEN
    n, r1, r2, c1, c2 = a + b + c + d, a + b, c + d, a + c, b + d
    r = stats.association(PAPER_QWEN)
    chi2 = n * (a * d - b * c) ** 2 / (r1 * r2 * c1 * c2)
    yates = n * (abs(a * d - b * c) - n / 2) ** 2 / (r1 * r2 * c1 * c2)
    assert r["chi2"] == pytest.approx(chi2, rel=1e-10)
    assert r["chi2_yates"] == pytest.approx(yates, rel=1e-10)
    # chi-square with df = 1 is the square of a standard normal: p = erfc(sqrt(x / 2))
    assert r["chi2_p"] == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9)
    assert r["chi2_yates_p"] == pytest.approx(math.erfc(math.sqrt(yates / 2)), rel=1e-9)
    assert r["phi"] == pytest.approx((a * d - b * c) / math.sqrt(r1 * r2 * c1 * c2))
    assert r["phi"] ** 2 * n == pytest.approx(chi2)  # phi^2 = chi^2 / n
    # odds ratio and Woolf interval
    lor, se = math.log(a * d / (b * c)), math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    assert r["odds_ratio"] == pytest.approx(a * d / (b * c))
    assert r["or_lo"] == pytest.approx(math.exp(lor - 1.959963984540054 * se))
    assert r["or_hi"] == pytest.approx(math.exp(lor + 1.959963984540054 * se))
    assert not r["or_haldane"]
    # phi interval: Fisher z
    z = math.atanh(r["phi"])
    assert r["phi_lo"] == pytest.approx(math.tanh(z - 1.959963984540054 / math.sqrt(n - 3)))
    assert r["phi_lo"] < r["phi"] < r["phi_hi"]
    # Wilson interval of P(A|T) = 261/456 by its closed form
    k, m, zz = a, c1, 1.959963984540054
    p = k / m
    centre = (p + zz ** 2 / (2 * m)) / (1 + zz ** 2 / m)
    half = zz / (1 + zz ** 2 / m) * math.sqrt(p * (1 - p) / m + zz ** 2 / (4 * m ** 2))
    assert r["p_a_given_t_lo"] == pytest.approx(centre - half)
    assert r["p_a_given_t_hi"] == pytest.approx(centre + half)
    assert 0 < r["fisher_p"] < 0.05


def test_other_reference_tables():
    # Llama correct traces: Yates 3.90 (paper); incorrect traces stay far below 3.841
    assert round(stats.association([[174, 244], [187, 345]])["chi2_yates"], 2) == 3.90
    for tab in ([[34, 485], [30, 371]], [[34, 347], [71, 498]]):
        assert stats.association(tab)["chi2_yates"] < stats.CHI2_CRIT


def test_zero_cell_table():
    tab = [[5, 0], [3, 4]]
    r = stats.association(tab)
    # Fisher exact by hand: hypergeometric with row total 5, column total 8, n = 12
    probs = {k: comb(8, k) * comb(4, 5 - k) / comb(12, 5) for k in range(1, 6)}
    p_obs = probs[5]
    assert r["fisher_p"] == pytest.approx(sum(p for p in probs.values() if p <= p_obs + 1e-12))
    assert r["fisher_p"] == pytest.approx(64 / 792)
    # Haldane-Anscombe: 0.5 added to every cell
    assert r["or_haldane"]
    assert r["odds_ratio"] == pytest.approx(5.5 * 4.5 / (0.5 * 3.5))
    se = math.sqrt(1 / 5.5 + 1 / 0.5 + 1 / 3.5 + 1 / 4.5)
    assert r["or_lo"] == pytest.approx(5.5 * 4.5 / (0.5 * 3.5) * math.exp(-1.959963984540054 * se))
    assert r["phi"] == pytest.approx(20 / math.sqrt(1120))
    assert r["p_a_given_not_t"] == 0.0 and r["p_a_given_not_t_lo"] == 0.0
    assert "Haldane" in r["note"]


def test_degenerate_table_is_nan_not_error():
    r = stats.association([[0, 0], [3, 4]])  # no correct answer at all
    assert math.isnan(r["chi2"]) and math.isnan(r["chi2_yates"]) and math.isnan(r["phi"])
    assert not r["chi2_sig"]
    assert r["p_a_given_t"] == 0.0 and r["fisher_p"] == pytest.approx(1.0)
    assert math.isnan(r["odds_ratio"]) and not r["or_haldane"]
    assert "undefined" in r["note"]
    e = stats.association([[0, 0], [0, 0]])
    assert e["n"] == 0 and math.isnan(e["joint"]) and math.isnan(e["odds_ratio"])
    with pytest.raises(ValueError):
        stats.association([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError):
        stats.association([[1, -2], [3, 4]])


# ----------------------------------------------------------------------------- CMH

def test_cmh_against_hand_computation():
    s1, s2 = [[10, 5], [3, 12]], [[8, 4], [6, 9]]
    r = stats.cmh([s1, s2])
    num = 10 * 12 / 30 + 8 * 9 / 27
    den = 5 * 3 / 30 + 4 * 6 / 27
    assert r["or_mh"] == pytest.approx(num / den)
    assert r["or_mh"] == pytest.approx(4.8)
    # CMH statistic without continuity correction: (sum(a - E a))^2 / sum Var a
    dev, var = 0.0, 0.0
    for (a, b), (c, d) in (s1, s2):
        n = a + b + c + d
        dev += a - (a + b) * (a + c) / n
        var += (a + b) * (c + d) * (a + c) * (b + d) / (n ** 2 * (n - 1))
    assert r["cmh_stat"] == pytest.approx(dev ** 2 / var)
    assert r["cmh_p"] == pytest.approx(math.erfc(math.sqrt(dev ** 2 / var / 2)))
    assert r["or_mh_lo"] < r["or_mh"] < r["or_mh_hi"]
    assert r["n_strata"] == r["n_strata_used"] == 2 and r["n"] == 57


def test_cmh_homogeneous_strata_and_single_stratum():
    # identical odds ratios in every stratum: pooled OR equals them, Breslow-Day finds nothing
    r = stats.cmh([[[10, 5], [5, 10]], [[20, 10], [10, 20]], [[4, 2], [2, 4]]])
    assert r["or_mh"] == pytest.approx(4.0)
    assert r["bd_stat"] == pytest.approx(0.0, abs=1e-8) and r["bd_p"] == pytest.approx(1.0)
    # a single stratum: the plain odds ratio, no homogeneity test
    one = stats.cmh([[[10, 5], [3, 12]]])
    assert one["or_mh"] == pytest.approx(10 * 12 / (5 * 3))
    assert math.isnan(one["bd_p"])
    # heterogeneous strata (OR 16 vs 1/16), pooled OR exactly 1: expected first cell
    # 50 * 50 / 100 = 25, variance 1 / (4 / 25) = 6.25, (40 - 25)^2 / 6.25 = 36 per stratum
    het = stats.cmh([[[40, 10], [10, 40]], [[10, 40], [40, 10]]])
    assert het["or_mh"] == pytest.approx(1.0)
    assert het["bd_stat"] == pytest.approx(72.0) and het["bd_p"] < 1e-15


def test_breslow_day_agrees_with_statsmodels():
    from statsmodels.stats.contingency_tables import StratifiedTable

    tabs = [np.array(t, float) for t in ([[10, 5], [3, 12]], [[8, 4], [6, 9]], [[3, 7], [9, 2]])]
    st = StratifiedTable(tabs)
    ref = st.test_equal_odds(adjust=False)
    stat, p = stats.breslow_day(tabs, st.oddsratio_pooled)
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert stats.cmh(tabs)["bd_p"] == pytest.approx(ref.pvalue)
    assert all(math.isnan(v) for v in stats.breslow_day(tabs, float("inf")))


def test_cmh_drops_uninformative_strata():
    r = stats.cmh([[[10, 5], [3, 12]], [[0, 0], [4, 3]], [[0, 0], [0, 0]]])
    assert r["n_strata"] == 3 and r["n_strata_used"] == 1
    assert r["or_mh"] == pytest.approx(8.0)
    assert "dropped" in r["note"]
    none = stats.cmh([[[0, 0], [4, 3]]])
    assert math.isnan(none["or_mh"]) and "no informative" in none["note"]


# ----------------------------------------------------------------------------- paired tests

def test_mcnemar_exact_by_hand():
    # x right / y wrong on 3 items, the reverse on 12: discordant 15 < 25 -> exact binomial
    x = [True] * 10 + [True] * 3 + [False] * 12 + [False] * 5
    y = [True] * 10 + [False] * 3 + [True] * 12 + [False] * 5
    r = stats.mcnemar(x, y)
    assert (r["both"], r["x_only"], r["y_only"], r["neither"]) == (10, 3, 12, 5)
    assert r["method"] == "exact"
    p = 2 * sum(comb(15, k) for k in range(0, 4)) / 2 ** 15
    assert r["p"] == pytest.approx(p)
    assert r["p"] == pytest.approx(0.03515625)
    assert r["diff"] == pytest.approx(13 / 30 - 22 / 30)


def test_mcnemar_chi2_by_hand():
    # discordant 30 + 10 = 40 >= 25 -> chi-square with continuity correction
    x = [True] * 30 + [False] * 10 + [True] * 5 + [False] * 5
    y = [False] * 30 + [True] * 10 + [True] * 5 + [False] * 5
    r = stats.mcnemar(x, y)
    assert r["method"] == "chi2"
    stat = (abs(30 - 10) - 1) ** 2 / 40
    assert r["statistic"] == pytest.approx(stat) and stat == pytest.approx(9.025)
    assert r["p"] == pytest.approx(math.erfc(math.sqrt(stat / 2)))
    same = stats.mcnemar([True, False], [True, False])
    assert same["p"] == 1.0 and same["discordant"] == 0


def test_cochrans_q_by_hand():
    m = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    k, cols, rows = 3, m.sum(0), m.sum(1)
    q = (k - 1) * (k * (cols ** 2).sum() - cols.sum() ** 2) / (k * rows.sum() - (rows ** 2).sum())
    r = stats.cochrans_q(m)
    assert q == pytest.approx(1.5)
    assert r["q"] == pytest.approx(q) and r["df"] == 2
    assert r["p"] == pytest.approx(math.exp(-q / 2))  # chi-square df=2 survival function
    assert stats.cochrans_q(np.ones((5, 3), int))["p"] == 1.0
    with pytest.raises(ValueError):
        stats.cochrans_q(np.array([[2, 0], [1, 1]]))


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = stats.holm([0.01, float("nan"), 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert stats.holm([]) == []


# ----------------------------------------------------------------------------- seeds

def test_seed_spread():
    r = stats.seed_spread([0.5, 0.6, 0.7])
    assert r["mean"] == pytest.approx(0.6) and r["sd"] == pytest.approx(0.1)
    h = 4.302652729911275 * 0.1 / math.sqrt(3)  # t_{0.975, 2}
    assert r["lo"] == pytest.approx(0.6 - h) and r["hi"] == pytest.approx(0.6 + h)
    one = stats.seed_spread([0.42])
    assert one["mean"] == 0.42 and one["n"] == 1
    assert math.isnan(one["sd"]) and math.isnan(one["lo"]) and math.isnan(one["hi"])
    miss = stats.seed_spread([0.1, float("nan")])
    assert miss["n"] == 1 and miss["n_missing"] == 1
    assert math.isnan(stats.seed_spread([])["mean"])
    inf = stats.seed_spread([1.0, float("inf")])
    assert inf["mean"] == float("inf") and math.isnan(inf["sd"]) and math.isnan(inf["lo"])


# ----------------------------------------------------------------------------- item tables

def _items(seeds=(0,), n=24, rs=0):
    """A small synthetic items frame, seeded: two datasets, one model, four conditions."""
    rng = np.random.default_rng(rs)
    cats = {"cotempqa": ["equal", "overlap", "during", "mix"], "babi": ["qa1", "qa2"]}
    rows = []
    for ds, cs in cats.items():
        for cond in ["untrained", "vanilla", "correct", "incorrect"]:
            trace = cond in ("correct", "incorrect")
            for seed in seeds:
                for i in range(n):
                    cls, ir = bool(trace and rng.random() < .6), bool(trace and rng.random() < .5)
                    em = bool(rng.random() < .4)
                    ev = bool(trace and rng.random() < .7)
                    rows.append(dict(dataset=ds, model="tiny", condition=cond, seed=seed, id=f"{ds}/{i}",
                                     category=cs[i % len(cs)], parse_status="ok", answer_em=em,
                                     answer_f1=float(em), rouge_l=np.nan, has_trace_target=trace,
                                     cls_correct=cls, ir_exact=ir, trace_correct=cls and ir,
                                     compat_evaluated=ev, trace_correct_compat=(cls or ir) if ev else None))
    df = pd.DataFrame(rows)
    df["trace_correct_compat"] = df["trace_correct_compat"].astype("boolean")
    return df


def test_association_table_matches_direct_computation():
    it = _items(seeds=(0, 1))
    at = stats.association_table(it, ["trace", "cls", "trace_compat"])
    assert set(at["condition"]) == {"correct", "incorrect"}  # only conditions with a trace target
    assert len(at) == 3 * 2 * 2 * 2  # steps x datasets x conditions x seeds
    row = at[(at.step == "trace") & (at.dataset == "cotempqa") & (at.condition == "correct") & (at.seed == 1)].iloc[0]
    g = it[(it.dataset == "cotempqa") & (it.condition == "correct") & (it.seed == 1)]
    a, t = g.answer_em.to_numpy(), g.trace_correct.to_numpy()
    assert [row.a_t, row.a_nt, row.na_t, row.na_nt] == [int((a & t).sum()), int((a & ~t).sum()),
                                                         int((~a & t).sum()), int((~a & ~t).sum())]
    assert row.joint == pytest.approx((a & t).mean())
    # CMH over the categories of that run
    tabs = [stats.table2x2(gc.answer_em, gc.trace_correct) for _, gc in g.groupby("category")]
    assert row.cmh_n_strata == 4
    assert row.cmh_or == pytest.approx(stats.cmh(tabs)["or_mh"], nan_ok=True)
    # compat: only evaluated items, the rest counted
    crow = at[(at.step == "trace_compat") & (at.dataset == "cotempqa") & (at.condition == "correct") & (at.seed == 1)].iloc[0]
    assert crow.n == int(g.compat_evaluated.sum()) and crow.n_unevaluated == len(g) - crow.n


def test_accuracy_table_seed_spread_and_order():
    it = _items(seeds=(0, 1, 2))
    acc = stats.accuracy_table(it)
    assert acc["condition"].tolist()[:4] == ["untrained", "vanilla", "correct", "incorrect"]
    r = acc[(acc.dataset == "babi") & (acc.condition == "correct")].iloc[0]
    per_seed = [it[(it.dataset == "babi") & (it.condition == "correct") & (it.seed == s)].answer_em.mean()
                for s in (0, 1, 2)]
    assert r.answer_em == pytest.approx(np.mean(per_seed))
    assert r.answer_em_sd == pytest.approx(np.std(per_seed, ddof=1))
    assert r.n_seeds == 3 and r.n_items == 24
    one = stats.accuracy_table(_items(seeds=(0,)))
    assert one["answer_em_lo"].isna().all()  # one seed: no interval


def test_compare_conditions_pairs_on_ids():
    it = _items()
    # drop one item from 'vanilla' in cotempqa: it must be left out of the pairs and counted
    it = it[~((it.condition == "vanilla") & (it.id == "cotempqa/0"))]
    comp = stats.compare_conditions(it)
    mc = comp[(comp.test == "mcnemar") & (comp.dataset == "cotempqa")]
    assert len(mc) == 6  # 4 conditions -> 6 pairs
    r = mc[(mc.cond_x == "untrained") & (mc.cond_y == "vanilla")].iloc[0]
    assert r.n == 23 and r.n_unpaired == 1
    x = it[(it.dataset == "cotempqa") & (it.condition == "untrained")].set_index("id").answer_em
    y = it[(it.dataset == "cotempqa") & (it.condition == "vanilla")].set_index("id").answer_em
    both = x.index.intersection(y.index)
    assert r.p == pytest.approx(stats.mcnemar(x[both], y[both])["p"])
    assert mc.p_holm.tolist() == pytest.approx(stats.holm(mc.p.tolist()))
    q = comp[(comp.test == "cochran_q") & (comp.dataset == "cotempqa")]
    assert len(q) == 1 and q.iloc[0].n == 23


def test_validate_items_errors():
    it = _items()
    with pytest.raises(ValueError, match="missing column"):
        stats.validate_items(it.drop(columns=["trace_correct"]))
    with pytest.raises(ValueError, match="share a"):
        stats.validate_items(pd.concat([it, it.iloc[:1]]))


def test_markdown_and_write_results(tmp_path):
    df = pd.DataFrame({"a": ["x|y", "z"], "b": [1.23456, float("nan")], "c": [True, False]})
    md = stats.markdown_table(df)
    lines = md.strip().splitlines()
    assert lines[0] == "| a | b | c |" and lines[1] == "|:---|---:|:---|"
    assert lines[2] == "| x\\|y | 1.235 | yes |" and lines[3] == "| z |  | no |"
    out = stats.write_results(_items(seeds=(0, 1)), "unit", out_dir=tmp_path, synthetic={"babi": True})
    assert sorted(p.name for p in out.values()) == sorted(
        f"{n}.{e}" for n in ("accuracy", "association", "comparisons") for e in ("csv", "md"))
    for p in out.values():
        assert p.stat().st_size > 100
    assoc = pd.read_csv(out["association_csv"])
    assert set(assoc.step) == {"cls", "ir", "trace", "trace_compat"}
    text = out["association_md"].read_text()
    assert "P(A∧T) %" in text and "| bAbI (synthetic) |" in text and "| CoTempQA |" in text
