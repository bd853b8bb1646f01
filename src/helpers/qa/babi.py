"""bAbI (Weston et al. 2015, en, 1k): short stories with one question and its supporting lines.

Labels: the task names (the original's 11 tasks, ``babi_tasks: paper11``, or all 20). One
problem per story: its first question, the lines before it, its supporting lines (the
relevance rule: the story lines at the question's supporting ids). Context rendered one line
per sentence. Split: every train story is train; test = per task ``floor(10%)`` of the test
stories, ``sample(n, random_state=data_seed)``. With the 11 original tasks: 3,773 / 376.

Synthetic generator: a small world simulator (people moving between rooms, picking up and
dropping objects, spatial and size relations, species rules) writes a short story and asks
one question of each of the original 11 tasks; the supporting lines are recorded as the
simulator produces them.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import base

NAME = "babi"
TASKS = {
    1: "single-supporting-fact", 2: "two-supporting-facts", 3: "three-supporting-facts",
    4: "two-arg-relations", 5: "three-arg-relations", 6: "yes-no-questions", 7: "counting",
    8: "lists-sets", 9: "simple-negation", 10: "indefinite-knowledge", 11: "basic-coreference",
    12: "conjunction", 13: "compound-coreference", 14: "time-reasoning", 15: "basic-deduction",
    16: "basic-induction", 17: "positional-reasoning", 18: "size-reasoning", 19: "path-finding",
    20: "agents-motivations",
}
PAPER11 = (1, 2, 4, 7, 8, 12, 14, 15, 16, 17, 18)  # the original study's 11 tasks
TEST_FRAC = 0.1
# The hub's parquet conversion branch (the repo itself is a script dataset), resolved to a
# full commit id at run time (helpers.hub) and recorded in the data stamp.
HUB = {"repo": "facebook/babi_qa", "revision": "refs/convert/parquet"}
VARIANTS = ("default",)
CLASSIFICATION = ("The category of the question represents what is being asked in that question. "
                  "The category of the question asked is: {label}.")
RETRIEVAL = "I need to use the following text to answer the question: {facts}"


# =============================================================================== rules

def task_numbers(babi_tasks: str) -> tuple[int, ...]:
    """Task numbers for the ``babi_tasks`` parameter (``paper11`` | ``all20``)."""
    if babi_tasks == "paper11":
        return PAPER11
    if babi_tasks == "all20":
        return tuple(range(1, 21))
    raise ValueError(f"babi_tasks must be 'paper11' or 'all20', not {babi_tasks!r}")


def labels(babi_tasks: str = "all20") -> tuple[str, ...]:
    """The task names of ``babi_tasks``."""
    return tuple(TASKS[t] for t in task_numbers(babi_tasks))


def corruption_labels(categories=(), babi_tasks: str | None = None) -> tuple[str, ...]:
    """The labels a wrong label is drawn from: those of ``babi_tasks`` when given; else the
    original's 11 tasks when every category present is one of them, else all 20."""
    if babi_tasks:
        return labels(babi_tasks)
    paper = labels("paper11")
    return paper if set(categories) <= set(paper) else labels("all20")


def classify(row: Mapping[str, Any]) -> str:
    """The task name of ``meta.task`` when present, else the ``category`` column."""
    m = base.meta(row)
    return TASKS[int(m["task"])] if "task" in m else row["category"]


def relevant(row: Mapping[str, Any], variant: str = "default") -> list[int]:
    """The story lines at the question's supporting ids."""
    m = base.meta(row)
    line_ids = [str(x) for x in m.get("line_ids", [])]
    sup = {str(x) for x in m.get("supporting_ids", [])}
    return [i for i, lid in enumerate(line_ids) if lid in sup]


def ambiguity(row: Mapping[str, Any]) -> str:
    """``none`` when a supporting id is not a line of the context, else ``unique``."""
    if not base.context(row):
        return "none"
    m = base.meta(row)
    sup = {str(x) for x in m.get("supporting_ids", [])}
    have = {str(x) for x in m.get("line_ids", [])}
    return "unique" if sup and sup <= have else "none"


def quality_flags(row: Mapping[str, Any]) -> list[str]:
    if not base.context(row):
        return ["empty_context"]
    return ["supporting_fact_missing"] if ambiguity(row) == "none" else []


# =============================================================================== corruption

def original_wrong_facts(p: Mapping[str, Any], rng: np.random.Generator) -> tuple[list[int], list[str], str]:
    """As many random non-supporting lines as supporting ones (fewer when the story has
    fewer), in draw order, LOWER-CASED."""
    ctx, rel = p["context"], list(p["relevant"])
    gold = {ctx[i].lower() for i in rel}
    cand = [i for i in range(len(ctx)) if ctx[i].lower() not in gold]
    k = min(len(rel), len(cand))
    pick = [cand[int(j)] for j in rng.choice(len(cand), size=k, replace=False)] if k else []
    note = "" if k == len(rel) else ("nothing_cited" if not k else "fewer_irrelevant_facts")
    return pick, [ctx[i].lower() for i in pick], note


# =============================================================================== loaders

_BABI_FILE = re.compile(r"^qa(\d+)_(.+)_(train|test|valid)\.txt$")


def parse_babi(path: str | Path) -> list[list[dict]]:
    """A bAbI text file -> stories, each a list of lines ``{id, text, question, answer,
    supporting, line}``. A malformed line raises ``ValueError`` with file:line and reason."""
    path = Path(path)
    stories: list[list[dict]] = []
    prev = 0
    with open(path, encoding="utf-8") as f:
        for ln, raw in enumerate(f, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            head, _, rest = line.partition(" ")
            if not head.isdigit() or not rest.strip():
                raise ValueError(f"{path}:{ln}: expected 'ID text' with a numeric line id, got {line[:60]!r}")
            lid = int(head)
            if lid == 1:
                stories.append([])
            elif not stories or lid != prev + 1:
                raise ValueError(f"{path}:{ln}: line id {lid} does not follow {prev} (a story starts at 1)")
            prev = lid
            parts = rest.split("\t")
            if len(parts) == 1:
                stories[-1].append({"id": head, "text": parts[0].strip(), "question": False,
                                    "answer": None, "supporting": [], "line": ln})
            elif len(parts) == 3:
                sup = parts[2].split()
                if not all(s.isdigit() for s in sup):
                    raise ValueError(f"{path}:{ln}: supporting ids must be numbers, got {parts[2]!r}")
                if not parts[1].strip():
                    raise ValueError(f"{path}:{ln}: question without an answer")
                stories[-1].append({"id": head, "text": parts[0].strip(), "question": True,
                                    "answer": parts[1].strip(), "supporting": sup, "line": ln})
            else:
                raise ValueError(f"{path}:{ln}: a question line needs 'question<TAB>answer<TAB>ids', "
                                 f"got {len(parts)} tab-separated fields")
    return stories


def babi_story_row(story: Sequence[Mapping], task: int, pool: str, k: int, source: str,
                   where: str) -> tuple[dict | None, dict | None]:
    """One problem per story: its first question, the context lines before it, the lines at
    its supporting ids, its answer. Returns (row, None) or (None, excluded)."""
    rid = f"babi/qa{task}/{pool}/{k}"
    qi = next((i for i, l in enumerate(story) if l["question"]), None)
    if qi is None:
        return None, base.excluded(rid, "story without a question", where)
    q = story[qi]
    ctx = [l for l in story[:qi] if not l["question"]]
    meta = {"task": task, "task_name": TASKS[task], "pool": pool, "story": k,
            "line_ids": [l["id"] for l in ctx], "supporting_ids": list(q["supporting"]),
            "question_line_id": q["id"], "file": where, "line": q.get("line")}
    row = base.make_row(id=rid, dataset="babi", split="train" if pool == "train" else "test",
                        question=q["text"], context=[l["text"] for l in ctx], answers=[q["answer"]],
                        category=TASKS[task], source=source, meta=meta)
    return row, None


def _babi_test_pick(n_stories: int, seed: int) -> list[int]:
    """The test stories of one task: floor(10%) of them, ``sample(n, random_state=seed)``."""
    n = int(math.floor(n_stories * TEST_FRAC + 1e-9))
    return sorted(pd.Series(range(n_stories)).sample(n=n, random_state=seed).tolist())


def task_file(data_dir: str | Path, task: int, pool: str) -> Path:
    d = Path(data_dir) / "babi" / "en"
    p = d / f"qa{task}_{TASKS[task]}_{pool}.txt"
    if not p.exists():
        hits = sorted(d.glob(f"qa{task}_*_{pool}.txt"))
        if not hits:
            raise FileNotFoundError(f"bAbI file missing: {p}")
        p = hits[0]
    return p


def load_local(data_dir: str | Path, babi_tasks: str = "paper11", seed: int = 42) -> tuple[pd.DataFrame, dict]:
    """bAbI (en, 1k) from ``<data_dir>/babi/en/qaN_<task>_{train,test}.txt``."""
    rows, excluded = [], []
    for t in task_numbers(babi_tasks):
        for pool in ("train", "test"):
            p = task_file(data_dir, t, pool)
            where = f"babi/en/{p.name}"
            stories = parse_babi(p)
            keep = range(len(stories)) if pool == "train" else _babi_test_pick(len(stories), seed)
            for k in keep:
                row, exc = babi_story_row(stories[k], t, pool, k, f"local:{where}", where)
                (rows.append(row) if row else excluded.append(exc))
    return base.frame(rows), {"source": f"local:{Path(data_dir) / 'babi' / 'en'}", "excluded": excluded,
                         "warnings": []}



def local_files(data_dir: Path, cfg: Mapping[str, Any]) -> list[Path]:
    """The task files the local loader reads (a missing one named as expected)."""
    files = []
    for t in task_numbers(cfg.get("babi_tasks", "paper11")):
        for pool in ("train", "test"):
            try:
                files.append(task_file(data_dir, t, pool))
            except FileNotFoundError:
                files.append(Path(data_dir) / "babi" / "en" / f"qa{t}_{TASKS[t]}_{pool}.txt")
    return files


def data_files(task: int) -> dict[str, str]:
    """bAbI parquet conversion: ``en-qa<N>/{train,test}/NNNN.parquet``."""
    return {pool: f"en-qa{task}/{pool}/*.parquet" for pool in ("train", "test")}


def _babi_hub_story(rec: Mapping) -> list[dict]:
    """A hub ``story`` (struct of lists, or list of structs) -> the parser's line dicts."""
    st = rec["story"]
    if isinstance(st, Mapping):
        n = len(st["id"])
        items = [{k: st[k][i] for k in st} for i in range(n)]
    else:
        items = list(st)
    lines = []
    for it in items:
        is_q = it["type"] in (1, "question")
        lines.append({"id": str(it["id"]), "text": str(it["text"]).strip(), "question": is_q,
                      "answer": str(it.get("answer") or "").strip() if is_q else None,
                      "supporting": [str(s) for s in (it.get("supporting_ids") or [])],
                      "line": None})
    return lines


def load_hub(babi_tasks: str = "paper11", seed: int = 42, revision: str | None = None,
                  location: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """bAbI (en, 1k) from the hub's parquet conversion (or a folder in its layout):
    ``en-qa<N>/{train,test}/*.parquet`` per task."""
    what = f"bAbI ({HUB['repo']})"
    path, rev, src = base.hub_location(HUB, location, revision, what)
    rows, excluded = [], []
    for t in tqdm(task_numbers(babi_tasks), desc="bAbI tasks (hub)"):
        cfg_name = f"en-qa{t}"
        ds = base.load_hf_dataset(path, data_files=data_files(t), revision=rev)
        for pool in ("train", "test"):
            recs = ds[pool].to_list()
            keep = range(len(recs)) if pool == "train" else _babi_test_pick(len(recs), seed)
            where = f"{src}/{cfg_name}/{pool}"
            for k in keep:
                row, exc = babi_story_row(_babi_hub_story(recs[k]), t, pool, k,
                                          f"{src}:{cfg_name}", where)
                (rows.append(row) if row else excluded.append(exc))
    return base.frame(rows), base.hub_report(src, rev, HUB, excluded, [])



# =============================================================================== generator


PEOPLE = ["Mary", "John", "Sandra", "Daniel", "Bill", "Fred", "Julie", "Emma"]
ROOMS = ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"]
OBJECTS = ["football", "apple", "milk"]
MOVES = ["moved to", "went to", "journeyed to", "travelled to", "went back to"]
GETS = ["picked up", "got", "took", "grabbed"]
DROPS = ["dropped", "discarded", "put down", "left"]
NUMBER_WORDS = ["none", "one", "two", "three"]


def _babi_meta(task: int, n_lines: int, rel: list[int]) -> dict:
    ids = [str(k + 1) for k in range(n_lines)]
    return {"task": task, "task_name": TASKS[task], "line_ids": ids,
            "supporting_ids": [ids[k] for k in rel], "question_line_id": str(n_lines + 1)}


def _b(task: int, question: str, lines: list[str], answer: str, rel: list[int]) -> dict:
    rel = sorted(set(rel))
    return {"question": question, "context": lines, "answers": [answer], "relevant": rel,
            "meta": _babi_meta(task, len(lines), rel)}


def _move(rng, p, room):
    return f"{p} {rng.choice(MOVES)} the {room}."


def babi_single_supporting_fact(rng):
    people = rng.sample(PEOPLE, rng.randint(2, 4))
    where, last, lines = {}, {}, []
    for k in range(rng.randint(4, 7)):
        p = rng.choice(people)
        room = rng.choice([r for r in ROOMS if r != where.get(p)])
        where[p], last[p] = room, k
        lines.append(_move(rng, p, room))
    p = rng.choice(sorted(where))
    return _b(1, f"Where is {p}?", lines, where[p], [last[p]])


def babi_two_supporting_facts(rng):
    people = rng.sample(PEOPLE, rng.randint(2, 3))
    objs = rng.sample(OBJECTS, rng.randint(1, 2))
    where, last_move, holder, got, lines = {}, {}, {}, {}, []
    free = list(objs)
    for k in range(rng.randint(5, 8)):
        p = rng.choice(people)
        if free and p in where and rng.random() < 0.4:
            o = free.pop(0)
            holder[o], got[o] = p, k
            lines.append(f"{p} {rng.choice(GETS)} the {o} there.")
        else:
            room = rng.choice([r for r in ROOMS if r != where.get(p)])
            where[p], last_move[p] = room, k
            lines.append(_move(rng, p, room))
    if not holder:
        return None
    o = rng.choice(sorted(holder))
    p = holder[o]
    return _b(2, f"Where is the {o}?", lines, where[p], [got[o], last_move[p]])


DIRS = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def babi_two_arg_relations(rng):
    rooms = rng.sample(ROOMS, rng.randint(3, 4))
    pos = {rooms[0]: (0, 0)}
    facts = []  # (a, dir, b): a is dir of b
    for r in rooms[1:]:
        for _ in range(20):
            b = rng.choice(list(pos))
            d = rng.choice(list(DIRS))
            xy = (pos[b][0] + DIRS[d][0], pos[b][1] + DIRS[d][1])
            if xy not in pos.values():
                pos[r] = xy
                facts.append((r, d, b) if rng.random() < 0.5 else (b, OPPOSITE[d], r))
                break
        else:
            return None
    lines = [f"The {a} is {d} of the {b}." for a, d, b in facts]
    k = rng.randrange(len(facts))
    a, d, b = facts[k]
    if rng.random() < 0.5:   # what is <d> of the <b>?  -> a
        q, ans = f"What is {d} of the {b}?", a
    else:                    # what is the <a> <d> of?  -> b
        q, ans = f"What is the {a} {d} of?", b
    return _b(4, q, lines, ans, [k])


def _object_world(rng, people, n_lines):
    """Moves, pick-ups and drops; returns lines and per-person object events."""
    where, holding, events, lines = {}, {p: [] for p in people}, {p: [] for p in people}, []
    free = list(OBJECTS)
    for k in range(n_lines):
        p = rng.choice(people)
        act = rng.random()
        if p in where and free and act < 0.45:
            o = rng.choice(free)
            free.remove(o)
            holding[p].append(o)
            events[p].append(k)
            lines.append(f"{p} {rng.choice(GETS)} the {o} there.")
        elif holding[p] and act < 0.7:
            o = rng.choice(holding[p])
            holding[p].remove(o)
            free.append(o)
            events[p].append(k)
            lines.append(f"{p} {rng.choice(DROPS)} the {o}.")
        else:
            room = rng.choice([r for r in ROOMS if r != where.get(p)])
            where[p] = room
            lines.append(_move(rng, p, room))
    return lines, holding, events


def _carrier(rng):
    """Two people moving objects about; one of those who handled an object, what they hold
    and the lines about it (``None`` when nobody handled one)."""
    people = rng.sample(PEOPLE, 2)
    lines, holding, events = _object_world(rng, people, rng.randint(5, 9))
    cands = [p for p in people if events[p]]
    if not cands:
        return None
    p = rng.choice(cands)
    return p, lines, holding[p], events[p]


def babi_counting(rng):
    c = _carrier(rng)
    if c is None:
        return None
    p, lines, held, ev = c
    return _b(7, f"How many objects is {p} carrying?", lines, NUMBER_WORDS[len(held)], ev)


def babi_lists_sets(rng):
    c = _carrier(rng)
    if c is None:
        return None
    p, lines, held, ev = c
    return _b(8, f"What is {p} carrying?", lines, ",".join(held) if held else "nothing", ev)


def babi_conjunction(rng):
    people = rng.sample(PEOPLE, rng.randint(3, 4))
    where, last, lines = {}, {}, []
    for k in range(rng.randint(3, 6)):
        a, b = rng.sample(people, 2)
        room = rng.choice(ROOMS)
        for p in (a, b):
            where[p], last[p] = room, k
        lines.append(f"{a} and {b} {rng.choice(MOVES)} the {room}.")
    p = rng.choice(sorted(where))
    return _b(12, f"Where is {p}?", lines, where[p], [last[p]])


TIMES = ["yesterday", "this morning", "this afternoon", "this evening"]


def _time_line(rng, p, t, room):
    v = rng.choice(["went to", "journeyed to", "travelled to", "moved to", "went back to"])
    if rng.random() < 0.5:
        return f"{t[0].upper() + t[1:]} {p} {v} the {room}."
    return f"{p} {v} the {room} {t}."


def babi_time_reasoning(rng):
    p, *others = rng.sample(PEOPLE, rng.randint(2, 3))
    slots = sorted(rng.sample(range(4), rng.randint(2, 4)))
    rooms = rng.sample(ROOMS, len(slots))
    items = [(p, s, r) for s, r in zip(slots, rooms)]
    for o in others:
        for s in rng.sample(range(4), rng.randint(1, 2)):
            items.append((o, s, rng.choice(ROOMS)))
    rng.shuffle(items)
    lines = [_time_line(rng, who, TIMES[s], r) for who, s, r in items]
    j = rng.randrange(1, len(slots))
    at = items.index((p, slots[j], rooms[j]))
    before = items.index((p, slots[j - 1], rooms[j - 1]))
    return _b(14, f"Where was {p} before the {rooms[j]}?", lines, rooms[j - 1], [at, before])


SPECIES = {"mouse": "mice", "cat": "cats", "sheep": "sheep", "wolf": "wolves"}
ANIMAL_NAMES = ["Gertrude", "Winona", "Emily", "Jessica", "Lily", "Bernhard", "Brian", "Julius", "Greg"]


def babi_basic_deduction(rng):
    kinds = list(SPECIES)
    fear = {k: rng.choice([x for x in kinds if x != k]) for k in kinds}
    rules = [(k, f"{SPECIES[k].capitalize()} are afraid of {SPECIES[fear[k]]}.") for k in kinds]
    names = rng.sample(ANIMAL_NAMES, rng.randint(2, 4))
    members = [(nm, rng.choice(kinds)) for nm in names]
    lines = [t for _, t in rules] + [f"{nm} is a {k}." for nm, k in members]
    kinds_rule = {k: i for i, (k, _) in enumerate(rules)}
    j = rng.randrange(len(members))
    nm, k = members[j]
    lines, m = base.shuffle_lines(rng, lines, {"rel": [kinds_rule[k], len(rules) + j]})
    return _b(15, f"What is {nm} afraid of?", lines, fear[k], m["rel"])


COLORS = ["green", "white", "yellow", "gray"]
KINDS16 = ["frog", "lion", "swan", "rhino"]


def babi_basic_induction(rng):
    names = rng.sample(ANIMAL_NAMES, 4)
    target, known, *rest = names
    kind, color = rng.choice(KINDS16), rng.choice(COLORS)
    lines, rel = [], []
    rel.append(len(lines)); lines.append(f"{known} is a {kind}.")
    rel.append(len(lines)); lines.append(f"{known} is {color}.")
    for nm in rest:  # other species, other colours
        k = rng.choice([x for x in KINDS16 if x != kind])
        lines.append(f"{nm} is a {k}.")
        lines.append(f"{nm} is {rng.choice(COLORS)}.")
    rel.append(len(lines)); lines.append(f"{target} is a {kind}.")
    body, m = base.shuffle_lines(rng, lines[:-1], {"rel": rel[:2]})
    lines = body + [lines[-1]]           # the target's species comes last, as in bAbI
    return _b(16, f"What color is {target}?", lines, color, m["rel"] + [len(lines) - 1])


SHAPES = ["triangle", "red square", "blue square", "pink rectangle", "yellow square", "red sphere"]
SPATIAL = {"above": (0, 1), "below": (0, -1), "to the right of": (1, 0), "to the left of": (-1, 0)}


def babi_positional_reasoning(rng):
    a, b, c = rng.sample(SHAPES, 3)
    d1, d2 = rng.choice(list(SPATIAL)), rng.choice(list(SPATIAL))
    pos = {b: (0, 0)}
    pos[a] = (SPATIAL[d1][0], SPATIAL[d1][1])                  # a is d1 of b
    pos[c] = (pos[a][0] + SPATIAL[d2][0], pos[a][1] + SPATIAL[d2][1])  # c is d2 of a
    if pos[c] == pos[b]:
        return None
    lines = [f"The {a} is {d1} the {b}.", f"The {c} is {d2} the {a}."]
    x, y = (b, c) if rng.random() < 0.5 else (c, b)
    dx, dy = pos[x][0] - pos[y][0], pos[x][1] - pos[y][1]
    axes = [d for d, (ux, uy) in SPATIAL.items() if (ux and dx) or (uy and dy)]
    d = rng.choice(axes)
    ux, uy = SPATIAL[d]
    yes = (dx * ux > 0) if ux else (dy * uy > 0)
    return _b(17, f"Is the {x} {d} the {y}?", lines, "yes" if yes else "no", [0, 1])


SIZED = ["box", "chest", "suitcase", "container", "chocolate", "wardrobe"]


def babi_size_reasoning(rng):
    objs = rng.sample(SIZED, 4)  # objs[0] smallest ... objs[3] largest
    chain = []
    for i in range(3):
        small, big = objs[i], objs[i + 1]
        chain.append(f"The {small} fits inside the {big}." if rng.random() < 0.5
                     else f"The {big} is bigger than the {small}.")
    order = list(range(3))
    rng.shuffle(order)
    lines = [chain[o] for o in order]
    i = rng.randrange(3)
    j = rng.randrange(i + 1, min(i + 2, 3) + 1)   # distance 1 or 2 along the chain
    small, big = objs[i], objs[j]
    rel = [order.index(k) for k in range(i, j)]
    form = rng.randrange(4)
    if form == 0:
        q, ans = f"Is the {big} bigger than the {small}?", "yes"
    elif form == 1:
        q, ans = f"Is the {small} bigger than the {big}?", "no"
    elif form == 2:
        q, ans = f"Does the {small} fit in the {big}?", "yes"
    else:
        q, ans = f"Does the {big} fit in the {small}?", "no"
    return _b(18, q, lines, ans, rel)


_BABI = {
    "single-supporting-fact": babi_single_supporting_fact,
    "two-supporting-facts": babi_two_supporting_facts,
    "two-arg-relations": babi_two_arg_relations,
    "counting": babi_counting,
    "lists-sets": babi_lists_sets,
    "conjunction": babi_conjunction,
    "time-reasoning": babi_time_reasoning,
    "basic-deduction": babi_basic_deduction,
    "basic-induction": babi_basic_induction,
    "positional-reasoning": babi_positional_reasoning,
    "size-reasoning": babi_size_reasoning,
}


def _babi(rng, cat):
    return _BABI[cat](rng)



def generate(n: int, seed: int, split: str) -> pd.DataFrame:
    return base.synthetic_frame(NAME, labels("paper11"), _babi, n, seed, split)


def check_synthetic(cfg: Mapping[str, Any]) -> None:
    if cfg.get("babi_tasks", "paper11") != "paper11":
        raise ValueError("the synthetic bAbI generator covers the original 11 tasks only; "
                         "babi_tasks='all20' needs data_source='local' or 'hub'")


SPEC = base.DatasetSpec(
    name=NAME, display_name="bAbI",
    labels=labels, classify=classify,
    variants=VARIANTS, relevant=relevant, ambiguity=ambiguity, quality_flags=quality_flags,
    classification=CLASSIFICATION, retrieval=RETRIEVAL,
    render_context=lambda context: "\n".join(context),
    render_answer=lambda answers: answers[0],
    original_separators={"train": " ", "test": "\n"},
    original_facts_as_list={"correct": True, "corrupted": True},
    corruption_labels=corruption_labels,
    original_wrong_facts=original_wrong_facts,
    answer_scorer="normalized", rouge_l=False, original_em_first_gold=True,
    compat_label_sentence=1, compat_label_casefold=True,
    original_label_scan=labels("paper11"),
    original_context_field="passage", original_relevant_fields=("reasoning", "answer_passage"),
    original_relevant_lines=True,
    citation_checkable=True,
    load_local=lambda d, cfg: load_local(d, cfg.get("babi_tasks", "paper11"), int(cfg.get("data_seed", 42))),
    local_files=local_files,
    load_hub=lambda cfg: load_hub(cfg.get("babi_tasks", "paper11"), int(cfg.get("data_seed", 42))),
    hub=HUB, hub_data_files=data_files,
    generate=generate, check_synthetic=check_synthetic,
)
