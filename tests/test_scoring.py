"""Scorers on hand-made outputs: parsing (well-formed and malformed), answer metrics, the
official CoTempQA matching (each relation template, the X/Y choice, the question-mention
rule, the longest-first walk), strict and compat trace rules, items and summary."""
from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pandas as pd
import pytest

from helpers import paths
from helpers.scoring import (ALL_ITEM_COLUMNS, ITEM_COLUMNS, ParsedOutput, answer_scores,
                             cite_indices, compat_trace, compat_trace_text, cotempqa_entities,
                             cotempqa_official, extract_answer_compat,
                             normalize_answer, parse_output, rouge_l, score_items, strict_trace,
                             summarize, table_2x2, token_f1, update_items_file)
from helpers.templates import CLASSIFICATION, RETRIEVAL, render_answer, render_trace

C_CT = CLASSIFICATION["cotempqa"].format(label="{}")
R_CT = RETRIEVAL["cotempqa"].split("{facts}")[0]
C_BB = CLASSIFICATION["babi"].format(label="{}")
R_BB = RETRIEVAL["babi"].split("{facts}")[0]

CT_FACTS = [
    "Ann Lee is a member of the Green Party from 2001 to 2003.",
    "Ann Lee is a member of the Red Party from 2002 to 2004.",
    "Ann Lee is a member of the Blue Party in 2010.",
]
CT_ROW = {
    "id": "cotempqa/equal/0", "question": "While Ann Lee was a member of the Green Party, which "
    "political party did Ann Lee belong to at the same time?", "context": CT_FACTS,
    "answers": ["Red Party"], "category": "overlap", "relevant": [1],
    "meta": json.dumps({"triple_element": "S1_R1_O2"}),
}
BB_CONTEXT = ["Mary moved to the bathroom.", "John went to the hallway.",
              "Mary travelled to the office."]
BB_ROW = {"id": "babi/qa1/test/0", "question": "Where is Mary?", "context": BB_CONTEXT,
          "answers": ["office"], "category": "single-supporting-fact", "relevant": [2],
          "meta": "{}"}


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset,label,facts,answer", [
    ("cotempqa", "overlap", CT_FACTS[1:2], "['Red Party']"),
    ("babi", "single-supporting-fact", BB_CONTEXT[2:], "office"),
    ("marco", "NUMERIC", ["It costs 5 dollars, as of 2019's prices."], "5 dollars"),
])
def test_rendered_trace_parses_back(dataset, label, facts, answer):
    p = parse_output(render_trace(dataset, label, facts, answer), dataset)
    assert p.status == "ok" and p.issues == ()
    assert p.cls_label == label
    assert p.cls_text == CLASSIFICATION[dataset].format(label=label)
    assert p.cited_facts == list(facts)
    assert p.answer == answer


def test_original_style_output_with_role_word_and_newlines():
    text = ("assistant\n<think>\n" + C_CT.format("equal") + "\n" + R_CT + repr(CT_FACTS[:2])
            + "\n</think>\n\n <answer>['Liberals']</answer>")
    p = parse_output(text, "cotempqa")
    assert (p.status, p.cls_label, p.cited_facts, p.answer) == ("ok", "equal", CT_FACTS[:2],
                                                               "['Liberals']")


def test_malformed_outputs_get_counted_statuses():
    trace = "<think>" + C_CT.format("equal") + "\n" + R_CT + repr(CT_FACTS[:1]) + "</think>"
    cases = {
        "": "empty",
        "   \n ": "empty",
        "Red Party": "no_tags",
        "<answer>Red Party</answer>": "no_think",
        "<think>" + C_CT.format("equal") + "\n" + R_CT + "['Ann": "unclosed_think",
        trace + " Red Party": "no_answer_tag",
        "<think>" + R_CT + "[]</think> <answer>x</answer>": "no_cls",
        "<think>" + C_CT.format("equal") + "</think> <answer>x</answer>": "no_facts",
        "<think></think> <answer>x</answer>": "no_cls+no_facts",
        "<think>" + C_CT.format("equal") + "\n" + R_CT + "['Ann Lee is a m</think>": "no_answer_tag+facts_unparsed",
    }
    for text, status in cases.items():
        assert parse_output(text, "cotempqa").status == status, text


def test_answer_extraction_strict():
    trace = "<think>" + C_CT.format("equal") + "\n" + R_CT + "[]</think>"
    assert parse_output(trace + " <answer> Red Party </answer>", "cotempqa").answer == "Red Party"
    assert parse_output(trace + "\nRed Party", "cotempqa").answer == "Red Party"   # no tag
    assert parse_output(trace + " <answer>Red Pa", "cotempqa").answer == "Red Pa"  # cut off
    assert parse_output("<think>" + C_CT.format("equal"), "cotempqa").answer == ""  # unclosed
    assert parse_output("assistant\nRed Party", "babi").answer == "Red Party"
    # a new user turn started by the model is cut
    assert parse_output("office\nAnswer the question based on the context:\nx", "babi").answer == "office"


def test_think_opened_by_the_prompt():
    """Chat templates that open the think block in the prompt: the output starts inside it."""
    text = C_BB.format("counting") + "\n" + R_BB + repr(BB_CONTEXT[:1]) + "</think> <answer>two</answer>"
    p = parse_output(text, "babi")
    assert (p.status, p.cls_label, p.cited_facts, p.answer) == ("ok", "counting", BB_CONTEXT[:1], "two")


def test_label_read_to_end_of_line_and_shorter_anchor():
    # label on the same line as the retrieval sentence
    p = parse_output("<think>" + C_CT.format("mix") + " " + R_CT + "[]</think><answer>a</answer>", "cotempqa")
    assert p.cls_label == "mix"
    # bAbI: first sentence garbled, the "asked is:" sentence still read
    p = parse_output("<think>Whatever. The category of the question asked is: counting.\n"
                     + R_BB + "[]</think><answer>a</answer>", "babi")
    assert p.cls_label == "counting" and p.status == "ok"


def test_compat_answer_extraction_fallbacks():
    assert extract_answer_compat("x <answer>Red Party</answer> y") == "Red Party"
    assert extract_answer_compat("Red Party\nAnswer the question based on the context: ...") == "Red Party"
    assert extract_answer_compat("I think the answer is Red Party") == "is Red Party"
    assert extract_answer_compat("Final Answer: Red Party") == "Red Party"
    assert extract_answer_compat("assistant\nRed Party") == "Red Party"
    assert extract_answer_compat("<answer>think tank</answer>") == "tank"  # the words are deleted
    # precedence: a new turn beats " answer ", which beats "answer:"
    assert extract_answer_compat("a answer b answer: c") == "b answer: c"
    assert extract_answer_compat("x answer y answer the question based on z") == "x answer y"
    assert parse_output("assistant\nRed Party", "babi", answer_rule="compat").answer == "Red Party"


# --------------------------------------------------------------------------------------------
# cited facts and strict trace scoring
# --------------------------------------------------------------------------------------------

def _parsed(facts_text: str, label: str = "overlap") -> ParsedOutput:
    return parse_output("<think>" + C_CT.format(label) + "\n" + R_CT + facts_text
                        + "</think> <answer>['Red Party']</answer>", "cotempqa")


def test_strict_trace_correct_and_label_case():
    s = strict_trace(_parsed(repr([CT_FACTS[1]]), label=" Overlap "), CT_ROW)
    assert s == {"cls_pred": "Overlap", "cls_correct": True, "ir_pred": [1], "ir_precision": 1.0,
                 "ir_recall": 1.0, "ir_exact": True, "trace_correct": True}


def test_cited_string_not_in_context_lowers_precision():
    s = strict_trace(_parsed(repr([CT_FACTS[1], "Ann Lee is a member of the Pirate Party."])), CT_ROW)
    assert s["ir_pred"] == [1]
    assert s["ir_precision"] == 0.5 and s["ir_recall"] == 1.0
    assert s["ir_exact"] is False and s["trace_correct"] is False


def test_citations_match_after_whitespace_normalisation_and_once():
    spaced = "  Ann Lee is a member of the\tRed Party   from 2002 to 2004. "
    s = strict_trace(_parsed(repr([spaced, CT_FACTS[1], CT_FACTS[0]])), CT_ROW)
    assert s["ir_pred"] == [1, 0]
    assert s["ir_precision"] == 0.5 and s["ir_exact"] is False


def test_unparsable_literal_falls_back_to_verbatim_facts():
    p = _parsed("[" + repr(CT_FACTS[1]) + ", 'Ann Lee is a mem")  # cut mid-list
    assert p.cited_facts is None and "facts_unparsed" in p.status
    assert cite_indices(p, CT_FACTS, [1]) == ([1], 0)
    s = strict_trace(p, CT_ROW)
    assert s["ir_exact"] is True and s["cls_correct"] is True


def test_bare_string_literal_is_one_fact():
    p = _parsed(repr(CT_FACTS[1]))
    assert p.status == "ok" and p.cited_facts == [CT_FACTS[1]]
    assert strict_trace(p, CT_ROW)["ir_exact"] is True


def test_duplicate_context_fact_prefers_relevant_copy():
    ctx = ["a fact.", "b fact.", "a fact."]
    p = parse_output("<think>" + C_CT.format("x") + "\n" + R_CT + "['a fact.']</think>", "cotempqa")
    assert cite_indices(p, ctx, [2]) == ([2], 0)
    assert cite_indices(p, ctx, []) == ([0], 0)


def test_no_trace_means_all_steps_false():
    for text in ["Red Party", "", "<think>" + C_CT.format("overlap")]:
        s = strict_trace(parse_output(text, "cotempqa"), CT_ROW)
        assert s["cls_correct"] is False and s["ir_exact"] is False and s["trace_correct"] is False
        assert s["ir_pred"] == [] and s["ir_precision"] == 0.0 and s["ir_recall"] == 0.0
    s = strict_trace(parse_output("<think>" + C_CT.format("overlap") + "</think><answer>a</answer>",
                                  "cotempqa"), CT_ROW)
    assert s["cls_correct"] is True and s["ir_exact"] is False  # no retrieval sentence


def test_empty_citation_against_empty_relevant_is_exact():
    row = dict(CT_ROW, relevant=[])
    s = strict_trace(_parsed("[]"), row)
    assert s["ir_exact"] is True and s["ir_precision"] == 1.0 and s["ir_recall"] == 1.0
    s = strict_trace(_parsed("[]"), CT_ROW)
    assert s["ir_exact"] is False and s["ir_precision"] == 0.0 and s["ir_recall"] == 0.0


# --------------------------------------------------------------------------------------------
# compat trace scoring
# --------------------------------------------------------------------------------------------

def test_compat_unevaluated_outputs():
    # The original's two tests only: no "think" in the output, or nothing at all before the
    # first </think>. (Changed from the earlier, unfaithful version, which also left out a
    # bare <think> tag, a role word or whitespace before </think>: the original evaluated them.)
    assert compat_trace_text("Red Party") is None                                 # no "think"
    assert compat_trace_text("</think> <answer>x</answer>") is None               # empty text
    assert compat_trace_text("Thinking aloud") is None                            # case-sensitive
    r = compat_trace("</think> x", CT_ROW, "cotempqa")
    assert r["compat_evaluated"] is False and r["trace_correct_compat"] is pd.NA
    assert compat_trace_text("I think it is x") == "I think it is x"                # quirk: evaluated
    assert compat_trace_text("<think></think> <answer>x</answer>") == "<think>"
    assert compat_trace_text("assistant\n<think>\n\n</think>\n\n x") == "assistant\n<think>\n\n"


def test_compat_whitespace_only_think_text_is_evaluated():
    for text in (" </think> <answer>x</answer>", "\n\n</think>think", "<think>\n</think> x"):
        r = compat_trace(text, CT_ROW, "cotempqa")
        assert r["compat_evaluated"] is True, text
        assert r["cls_correct_compat"] is False and r["ir_correct_compat"] is False


def test_compat_label_is_a_substring_of_the_first_sentence_cotempqa():
    text = ("<think>" + C_CT.format("during or overlap") + "\n" + R_CT + repr([CT_FACTS[1]])
            + "</think> <answer>x</answer>")
    r = compat_trace(text, CT_ROW, "cotempqa")
    assert r["cls_correct_compat"] is True and r["trace_correct_compat"] is True
    assert strict_trace(parse_output(text, "cotempqa"), CT_ROW)["cls_correct"] is False
    # the label only in a later sentence does not count
    text2 = "<think>Relation unknown. It is overlap.</think>"
    assert compat_trace(text2, CT_ROW, "cotempqa")["cls_correct_compat"] is False


def test_compat_label_in_second_sentence_babi():
    ok = render_trace("babi", "single-supporting-fact", BB_CONTEXT[2:], "office")
    assert compat_trace(ok, BB_ROW, "babi")["cls_correct_compat"] is True
    first_only = "<think>single-supporting-fact. Nothing here. " + R_BB + "[]</think>"
    assert compat_trace(first_only, BB_ROW, "babi")["cls_correct_compat"] is False
    # no second sentence: the first is tested (the original's fallback; the earlier version
    # of this test expected False, which was not what the original did)
    one_sentence = "<think>single-supporting-fact</think>"
    assert compat_trace(one_sentence, BB_ROW, "babi")["cls_correct_compat"] is True


def test_compat_classification_lower_cases_the_sentence_babi_marco():
    upper = "<think>" + C_BB.format("SINGLE-SUPPORTING-FACT") + "\n" + R_BB + "[]</think>"
    assert compat_trace(upper, BB_ROW, "babi")["cls_correct_compat"] is True
    mrow = dict(BB_ROW, category="NUMERIC")
    lower = "<think>" + C_BB.format("numeric") + "</think>"
    assert compat_trace(lower, mrow, "marco")["cls_correct_compat"] is True
    # CoTempQA is case-sensitive, as in the original
    ct = "<think>" + C_CT.format("OVERLAP") + "</think>"
    assert compat_trace(ct, CT_ROW, "cotempqa")["cls_correct_compat"] is False


def test_compat_ir_any_context_fact_of_the_row():
    wrong = render_trace("cotempqa", "overlap", [CT_FACTS[2]], "['Red Party']")  # irrelevant fact
    r = compat_trace(wrong, CT_ROW, "cotempqa")
    assert r["ir_correct_compat"] is True and r["trace_correct_compat"] is True
    s = strict_trace(parse_output(wrong, "cotempqa"), CT_ROW)
    assert s["ir_exact"] is False and s["ir_precision"] == 0.0
    none = render_trace("cotempqa", "overlap", ["Some fact not in the context."], "x")
    assert compat_trace(none, CT_ROW, "cotempqa")["ir_correct_compat"] is False
    # verbatim: a whitespace variant does not count under compat
    spaced = render_trace("cotempqa", "overlap", [CT_FACTS[1].replace(" ", "  ")], "x")
    assert compat_trace(spaced, CT_ROW, "cotempqa")["ir_correct_compat"] is False


def test_compat_join_by_answer_substring_picks_the_first_containing_row():
    # CoTempQA: the original scanned the item's category file, so the wrong row is another
    # problem of the same category whose answer text contains the item's first answer
    r0 = dict(CT_ROW, id="a", answers=["Red Party", "Blue"], category="equal",
              context=["Bo is a member of the Red Party in 2000."], relevant=[0])
    r1 = dict(CT_ROW, id="b", answers=["Red"], category="equal",
              context=["Cy is a member of the Red in 2001."], relevant=[0])
    r2 = dict(CT_ROW, id="c", answers=["Red"], category="mix",
              context=["Di is a member of the Red in 1999."], relevant=[0])
    gold = pd.DataFrame([r2, r0, r1])
    out = render_trace("cotempqa", "equal", r1["context"], "['Red']")
    preds = pd.DataFrame({"id": ["b"], "prediction": [out]})
    by_id = score_items(preds, gold, dataset="cotempqa", condition="correct", mode_compat_join="id")
    by_answer = score_items(preds, gold, dataset="cotempqa", condition="correct")
    assert by_answer.attrs["compat_join"]["mode"] == "original"       # the default
    assert bool(by_id.loc[0, "trace_correct_compat"]) is True
    assert bool(by_answer.loc[0, "cls_correct_compat"]) is True       # a is "equal" too
    assert bool(by_answer.loc[0, "ir_correct_compat"]) is False       # a's facts are not cited
    assert by_answer.attrs["compat_join"]["other_row"] == 1
    assert by_answer.loc[0, "trace_correct"] == by_id.loc[0, "trace_correct"] == True  # strict: by id
    # the same under the former name of the mode
    old = score_items(preds, gold, dataset="cotempqa", condition="correct", mode_compat_join="answer")
    assert old["ir_correct_compat"].tolist() == by_answer["ir_correct_compat"].tolist()
    # citing a's fact instead makes IR right under the original's join only
    out_a = render_trace("cotempqa", "equal", r0["context"], "['Red']")
    both = score_items(pd.DataFrame({"id": ["b"], "prediction": [out_a]}), gold,
                       dataset="cotempqa", condition="correct")
    assert bool(both.loc[0, "ir_correct_compat"]) is True


def test_compat_join_babi_scans_every_task_and_carries_over():
    # bAbI / MS MARCO: one test file for every category, so the joined row can be another
    # task's (wrong label); with no containing row, the previous evaluated item's row is reused
    a = dict(BB_ROW, id="a", answers=["office"], category="two-supporting-facts",
             context=["Bill went to the office."])
    b = dict(BB_ROW, id="b", answers=["office"])
    c = dict(BB_ROW, id="c", answers=["kitchen"], context=["Sue went to the kitchen."])
    gold = pd.DataFrame([a, b, c])
    t_b = render_trace("babi", "single-supporting-fact", BB_CONTEXT[2:], "office")
    t_c = render_trace("babi", "single-supporting-fact", ["Sue went to the kitchen."], "kitchen")
    # c's answer is found in row c itself; then drop row c from the scanned rows
    preds = pd.DataFrame({"id": ["b", "c"], "prediction": [t_b, t_c]})
    items = score_items(preds, gold, dataset="babi", condition="correct")
    assert items["cls_correct_compat"].tolist() == [False, True]     # b joined to a (other task)
    assert items.attrs["compat_join"]["other_row"] == 1
    from helpers.scoring import JoinRow
    rows = [JoinRow("office", "two-supporting-facts", ["Bill went to the office."])]
    carried = score_items(preds, gold, dataset="babi", condition="correct", join_rows=rows)
    assert carried.attrs["compat_join"]["carried_over"] == 1          # c reuses b's row
    assert carried["cls_correct_compat"].tolist() == [False, False]
    # nothing found before any row was: not joined, counted
    first = score_items(preds.iloc[::-1].reset_index(drop=True), gold, dataset="babi",
                        condition="correct", join_rows=rows)
    assert first.attrs["compat_join"]["no_row"] == 1
    assert first["compat_evaluated"].tolist() == [False, True]


def test_unevaluated_outputs_do_not_move_the_join():
    a = dict(BB_ROW, id="a", answers=["office"], context=["Bill went to the office."])
    c = dict(BB_ROW, id="c", answers=["kitchen"], context=["Sue went to the kitchen."])
    gold = pd.DataFrame([a, c])
    from helpers.scoring import JoinRow
    rows = [JoinRow("office", "single-supporting-fact", ["Bill went to the office."])]
    t = render_trace("babi", "single-supporting-fact", ["Bill went to the office."], "kitchen")
    # line 1 (a) is unevaluated (no "think"), so line 2 (c, no containing row) has no row to reuse
    preds = pd.DataFrame({"id": ["a", "c"], "prediction": ["office", t]})
    items = score_items(preds, gold, dataset="babi", condition="correct", join_rows=rows)
    assert items["compat_evaluated"].tolist() == [False, False]
    assert items.attrs["compat_join"]["no_row"] == 1


# --------------------------------------------------------------------------------------------
# answers: bAbI / MS MARCO
# --------------------------------------------------------------------------------------------

def test_normalisation_and_babi_em():
    assert normalize_answer("  The  Kitchen!! ") == "the kitchen"
    assert answer_scores("Office.", BB_ROW, "babi")["em"] is True
    assert answer_scores("the office", BB_ROW, "babi")["em"] is False  # articles are kept
    s = answer_scores("the office", BB_ROW, "babi")
    assert s["f1"] == pytest.approx(2 / 3) and np.isnan(s["rouge_l"])


def test_marco_f1_and_rouge_l():
    row = {"id": "m", "answers": ["the cat is on the mat"]}
    s = answer_scores("the cat sat on the mat", row, "marco")
    assert s["em"] is False
    assert s["f1"] == pytest.approx(5 / 6) and s["rouge_l"] == pytest.approx(5 / 6)
    s = answer_scores("mat the on sat cat the", row, "marco")   # same bag, other order
    assert s["f1"] == pytest.approx(5 / 6) and s["rouge_l"] == pytest.approx(0.5)
    assert rouge_l("a b", "a b c d", beta=1.0) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("", "") == 1.0 and rouge_l("", "x") == 0.0
    # several gold answers: the best counts
    row2 = {"id": "m2", "answers": ["no", "the cat is on the mat"]}
    assert answer_scores("the cat is on the mat.", row2, "marco")["em"] is True


def _brute_lcs(a, b) -> int:
    for k in range(len(a), 0, -1):
        if any(_is_subseq(sub, b) for sub in itertools.combinations(a, k)):
            return k
    return 0


def test_rouge_l_is_the_lcs_f_of_normalised_tokens():
    # words the library's own tokenizer would split or drop ("don't" -> "don t", "été" -> "t"):
    # rouge_l scores the project's normalised tokens, checked against a brute-force LCS
    words = ["a", "b", "c", "don't", "dont", "t", "été", "U.S.", "us", "42"]
    rng = random.Random(0)
    for _ in range(60):
        pred = " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
        gold = " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        for beta in (1.0, 2.0):
            if not p or not g:
                want = float(p == g)
            else:
                lcs = _brute_lcs(p, g)
                prec, rec = lcs / len(p), lcs / len(g)
                want = 0.0 if lcs == 0 else (1 + beta ** 2) * prec * rec / (rec + beta ** 2 * prec)
            assert rouge_l(pred, gold, beta=beta) == pytest.approx(want), (pred, gold, beta)
    assert rouge_l("don't", "été") == 0.0 and rouge_l("don't", "dont") == 1.0
    assert rouge_l("", "") == 1.0 and rouge_l("!!", "") == 1.0 and rouge_l("x", "") == 0.0


def _is_subseq(sub, seq) -> bool:
    it = iter(seq)
    return all(x in it for x in sub)


# --------------------------------------------------------------------------------------------
# answers: CoTempQA official semantics
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fact,x,y", [
    ("Ann Lee holds the position of mayor from 1990 to 1995.", "ann lee", "mayor"),
    ("Ann Lee held the position of mayor in March 3, 1990.", "ann lee", "mayor"),
    ("Ann Lee holds the position of mayor from 1990", "ann lee", "mayor"),
    ("Ann Lee holds the position of mayor.", "ann lee", "mayor"),
    ("Bo Ek was a member of the Green Party from 2001 to 2003.", "bo ek", "green party"),
    ("Bo Ek is a member of the Green Party in 2001.", "bo ek", "green party"),
    ("Bo Ek is a member of the Green Party.", "bo ek", "green party"),
    ("Cy Di is the chair of Rotary Club in 2004.", "cy di", "rotary club"),
    ("Cy Di was the chair of Rotary Club from 2004 to 2006.", "cy di", "rotary club"),
    ("Di Fo is the head of City Council from 2000 to 2002.", "di fo", "city council"),
    ("Di Fo was the head of City Council.", "di fo", "city council"),
    ("Acme Radio is owned by Big Media in 2010.", "acme radio", "big media"),
    ("Acme Radio was owned by Big Media from 2010 to 2012.", "acme radio", "big media"),
    ("Ed Gu attended Oxford University from 1980 to 1984.", "ed gu", "oxford university"),
    ("Ed Gu attended Oxford University in 1980.", "ed gu", "oxford university"),
    ("Fa Hu worked for Globex in 2011.", "fa hu", "globex"),
    ("Fa Hu works for Globex from 2011 to 2013.", "fa hu", "globex"),
    ("Gi Iv played for Rovers FC from 2005 to 2007.", "gi iv", "rovers fc"),
    ("Gi Iv plays for Rovers FC in 2005.", "gi iv", "rovers fc"),
])
def test_relation_templates_and_the_x_y_choice(fact, x, y):
    # the official scorer takes X unless the question is S2_R1_O1 (reproduced as is)
    for te in ["S1_R1_O2", "S1_R2_O2", "S2_R1_O2", "S2_R2_O2"]:
        assert cotempqa_entities([fact], te) == [x]
    assert cotempqa_entities([fact], "S2_R1_O1") == [y]


def test_relation_order_template_order_and_fallthrough():
    # first matching template wins: "from ... to ..." before "in ..."
    assert cotempqa_entities(["Ann holds the position of mayor in Paris from 1990 to 1995."],
                             "S2_R1_O1") == ["mayor in paris"]
    # the first keyword present selects the relation (position before play)
    assert cotempqa_entities(["Al holds the position of coach who plays for fun in 2001."],
                             "S2_R1_O1") == ["coach who plays for fun"]
    # when its templates do not match, the next keyword present is tried
    assert cotempqa_entities(["Al Bo works for the head of Zeta in 2001."], "S2_R1_O1") == \
        ["the head of zeta"]
    # keywords are substrings ("play" in "player"): a fact with no template yields nothing
    assert cotempqa_entities(["A famous player of chess."], "S2_R1_O1") == []
    assert cotempqa_entities(["Nothing to see here."], "S1_R1_O2") == []


def test_inverted_x_y_changes_the_verdict():
    facts = ["Ann holds the position of mayor in 1990.", "Ann holds the position of sheriff in 1990.",
             "Bob holds the position of judge in 1990."]
    q = "While Ann was holding the position of mayor, which position did Ann hold at the same time?"
    # S1_R1_O2: candidates are the subjects (ann, bob) + gold; "sheriff" is no candidate
    pred, em, f1 = cotempqa_official("['judge', 'sheriff']", ["judge"], q, facts, "S1_R1_O2")
    assert (pred, em, f1) == (["judge"], True, 1.0)
    # S2_R1_O1: candidates are the objects, so "sheriff" is a (wrong) predicted answer
    pred, em, f1 = cotempqa_official("['judge', 'sheriff']", ["judge"], q, facts, "S2_R1_O1")
    assert pred == ["judge", "sheriff"] and em is False and f1 == pytest.approx(2 / 3)


def test_question_mention_rule():
    facts = ["Ann plays for Rovers FC from 2001 to 2005.", "Bob plays for Rovers FC from 2002 to 2003.",
             "Cy plays for United FC from 2002 to 2003."]
    q = "While Ann was playing for Rovers FC, who also played for Rovers FC at the same time?"
    # "rovers fc" is in the question: removed once from the prediction and skipped
    assert cotempqa_official("Bob plays for Rovers FC", ["Bob"], q, facts, "S2_R1_O1") == (["bob"], True, 1.0)
    # only the FIRST candidate in both question and prediction is skipped
    facts2 = ["Ann is a member of the Green Party in 2001.", "Bob is a member of the Red Party in 2001."]
    q2 = "While Ann was a member of the Green Party, which party did Bob belong to at the same time?"
    pred, em, f1 = cotempqa_official("Bob, Ann, Red Party", ["Red Party"], q2, facts2, "S2_R2_O2")
    assert pred == ["bob", "red party"] and em is False and f1 == pytest.approx(2 / 3)
    # the gold answer itself in the question: deleted, nothing left to predict
    q3 = "While Ann was a member of the Red Party Youth, which party did Ann belong to?"
    pred, em, _ = cotempqa_official("Red Party", ["Red Party"], q3, facts2, "S1_R1_O2")
    assert pred == [""] and em is False


def test_longest_first_walk_and_fallbacks():
    facts = ["Zed is a member of the Liberal Party in 2019.", "Zed is a member of the Liberal in 2018."]
    q = "While Zed was a member of the Greens, which party did Zed belong to?"
    assert cotempqa_official("['Liberal Party']", ["Liberal Party"], q, facts, "S2_R1_O1")[:2] == \
        (["liberal party"], True)
    assert cotempqa_official("['Liberal']", ["Liberal Party"], q, facts, "S2_R1_O1")[:2] == \
        (["liberal"], False)
    # nothing found: the whole prediction is the one answer
    assert cotempqa_official("Nobody, really.", ["Liberal Party"], q, facts, "S2_R1_O1") == \
        (["nobody really"], False, 0.0)
    # the official scorer's own cuts: a new prompt, then " answer "
    p = "Liberal Party\nAnswer the question based on the context: Zed is a member of the Liberal"
    assert cotempqa_official(p, ["Liberal Party"], q, facts, "S2_R1_O1")[:2] == (["liberal party"], True)
    p = "My answer is the Liberal Party"
    assert cotempqa_official(p, ["Liberal Party"], q, facts, "S2_R1_O1")[:2] == (["liberal party"], True)


def test_mix_answers_f1_and_case():
    facts = ["Ann works for Acme from 2000 to 2005.", "Bob works for Acme from 2001 to 2003.",
             "Cy works for Acme from 2002 to 2004.", "Di works for Acme in 1990."]
    q = "While Ann was working for Acme, who also worked for Acme at the same time?"
    gold = ["Bob", "Cy"]
    assert cotempqa_official("['cy', 'BOB', 'Bob']", gold, q, facts, "S2_R1_O1") == \
        (["bob", "cy"], True, 1.0)
    pred, em, f1 = cotempqa_official("['Bob']", gold, q, facts, "S2_R1_O1")
    assert em is False and f1 == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_answer_scores_cotempqa_uses_row_and_meta():
    assert answer_scores("['Red Party']", CT_ROW, "cotempqa")["em"] is True
    assert answer_scores("['Blue Party']", CT_ROW, "cotempqa")["em"] is False
    with pytest.raises(ValueError, match="triple_element"):
        answer_scores("x", dict(CT_ROW, meta="{}"), "cotempqa")
    # a list literal with Python escapes (repr of a no-break space) is decoded first
    row = dict(CT_ROW, answers=["St.\xa0Louis"], context=["Zed works for St.\xa0Louis in 2001."],
               meta=json.dumps({"triple_element": "S2_R1_O1"}))
    rendered = render_answer("cotempqa", ["St.\xa0Louis"])
    assert "\\xa0" in rendered
    assert answer_scores(rendered, row, "cotempqa")["em"] is True
    assert answer_scores(rendered, row, "cotempqa", decode_literal=False)["em"] is False


@pytest.mark.skipif(not (paths.SHARED_DATA / "cotempqa").exists(), reason="no ../shared/data")
def test_real_cotempqa_gold_as_prediction_is_nearly_always_exact():
    """On the real scenario files every fact matches a relation template, and predicting the
    gold list (as the students are trained to write it) is exact except where the official rule
    deletes a gold answer that the question mentions."""
    n = bad = 0
    for name in ["equal", "overlap", "during", "mix"]:
        with open(paths.SHARED_DATA / "cotempqa" / f"{name}.json") as f:
            for line in f:
                r = json.loads(line)
                assert len(cotempqa_entities(r["facts"], r["triple_element"])) == len(r["facts"])
                row = {"id": name, "question": r["question"], "context": r["facts"],
                       "answers": r["answer"],
                       "meta": json.dumps({"triple_element": r["triple_element"]})}
                em = answer_scores(render_answer("cotempqa", r["answer"]), row, "cotempqa")["em"]
                if not em:
                    bad += 1
                    assert any(a.lower() in r["question"].lower() for a in r["answer"])
                n += 1
    assert n > 2000 and bad / n < 0.02


# --------------------------------------------------------------------------------------------
# items and summary
# --------------------------------------------------------------------------------------------

def _gold_ct() -> pd.DataFrame:
    r2 = dict(CT_ROW, id="cotempqa/equal/1", category="equal")
    return pd.DataFrame([CT_ROW, r2])


def test_score_items_columns_types_and_values(tmp_path):
    gold = _gold_ct()
    good = render_trace("cotempqa", "overlap", [CT_FACTS[1]], "['Red Party']")
    preds = pd.DataFrame({"id": ["cotempqa/equal/1", "cotempqa/equal/0"],
                          "prediction": ["Red Party", good]})
    items = score_items(preds, gold, dataset="cotempqa", condition="vanilla")
    assert list(items.columns) == ITEM_COLUMNS
    assert items["id"].tolist() == ["cotempqa/equal/1", "cotempqa/equal/0"]
    assert items["parse_status"].tolist() == ["no_tags", "ok"]
    assert items["answer_em"].tolist() == [True, True]
    assert items["has_trace_target"].tolist() == [False, False]
    assert items["trace_correct"].tolist() == [False, True]
    assert items["ir_pred"].tolist() == [[], [1]]
    assert items["cls_pred"].tolist() == [None, "overlap"]
    assert items["compat_evaluated"].tolist() == [False, True]
    assert items["trace_correct_compat"].isna().tolist() == [True, False]
    assert str(items["cls_correct_compat"].dtype) == "boolean"
    assert items["rouge_l"].isna().all()
    assert score_items(preds, gold, dataset="cotempqa", condition="krsl")["has_trace_target"].all()
    # round trip through the items file, replacing the rows of the same run
    run = items.assign(dataset="cotempqa", model="tiny", condition="vanilla", seed=0)[ALL_ITEM_COLUMNS]
    path = tmp_path / "items.parquet"
    update_items_file(path, run)
    other = run.assign(condition="correct")
    update_items_file(path, other)
    merged = update_items_file(path, run)
    back = pd.read_parquet(path)
    assert len(back) == len(merged) == 4 and list(back.columns) == ALL_ITEM_COLUMNS
    assert sorted(back["condition"].unique()) == ["correct", "vanilla"]
    with pytest.raises(ValueError, match="missing"):
        update_items_file(path, items)  # run columns missing


def test_score_items_bad_input_is_an_error():
    gold = _gold_ct()
    with pytest.raises(KeyError, match="not in the gold"):
        score_items(pd.DataFrame({"id": ["nope"], "prediction": ["x"]}), gold,
                    dataset="cotempqa", condition="correct")
    with pytest.raises(ValueError, match="duplicate"):
        score_items(pd.DataFrame({"id": [CT_ROW["id"]] * 2, "prediction": ["x", "y"]}), gold,
                    dataset="cotempqa", condition="correct")
    with pytest.raises(ValueError, match="unknown dataset"):
        score_items(pd.DataFrame({"id": [], "prediction": []}), gold, dataset="gsm8k",
                    condition="correct")
    # a missing prediction (None) is an empty output, counted, not dropped
    items = score_items(pd.DataFrame({"id": [CT_ROW["id"]], "prediction": [None]}), gold,
                        dataset="cotempqa", condition="correct")
    assert items["parse_status"].tolist() == ["empty"] and items["answer_em"].tolist() == [False]


def test_summary_tables_and_counts():
    gold = pd.DataFrame([dict(BB_ROW, id=f"b{k}") for k in range(5)])
    good = render_trace("babi", "single-supporting-fact", BB_CONTEXT[2:], "office")
    bad_trace = render_trace("babi", "counting", BB_CONTEXT[:1], "office")
    preds = pd.DataFrame({"id": [f"b{k}" for k in range(5)], "prediction": [
        good,                                     # A, T
        bad_trace,                                # A, not T (compat: IR yes, C no)
        good.replace("office</answer>", "hallway</answer>"),   # not A, T
        "kitchen",                                # not A, no trace (unevaluated under compat)
        "<think>" + C_BB.format("single-supporting-fact"),     # truncated: not A, no trace
    ]})
    items = score_items(preds, gold, dataset="babi", condition="correct")
    s = summarize(items)
    assert s["n"] == 5
    assert s["answer"]["em"] == pytest.approx(0.4)
    assert s["strict"]["tables"]["answer_x_trace"] == [[1, 1], [1, 2]]
    assert s["strict"]["tables"]["answer_x_cls"] == [[1, 1], [1, 2]]
    assert s["strict"]["tables"]["answer_x_ir"] == [[1, 1], [1, 2]]
    assert s["strict"]["trace_acc"] == pytest.approx(0.4)
    assert s["compat"]["n_evaluated"] == 4 and s["compat"]["n_unevaluated"] == 1
    assert s["compat"]["tables"]["answer_x_ir"] == [[2, 0], [1, 1]]
    assert s["compat"]["tables"]["answer_x_cls"] == [[1, 1], [2, 0]]
    assert s["parse_status"]["by_class"]["ok"] == 3
    assert s["parse_status"]["by_class"]["no_tags"] == 1
    assert s["parse_status"]["by_class"]["unclosed_think"] == 1
    assert s["by_category"]["single-supporting-fact"]["n"] == 5
    assert s["answer"]["rouge_l"] is None
    json.dumps(s)  # plain JSON


def test_table_2x2_layout():
    assert table_2x2([True, True, False, False, True], [True, False, True, False, True]) == [[2, 1], [1, 1]]
