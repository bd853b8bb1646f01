"""Seeded offline generators: problems in the data schema with exact ground truth.

They stand in for the real datasets where no network or files are available (the quick and
smoke profiles) and are labelled synthetic wherever shown (``source='synthetic'``,
``synthetic=True``). Each imitates its dataset's structure and uses its real categories:

* **bAbI**: a small world simulator (people moving between rooms, picking up and dropping
  objects, spatial and size relations, species rules) writes a short story and asks one
  question of each of the original 11 tasks; the supporting lines are recorded as the
  simulator produces them.
* **CoTempQA**: facts ``(subject, relation, object, interval)`` rendered as "X works for Y
  from 1990 to 1996."; a question conditions on one fact's interval ("While X was working
  for Y, which position did X hold at the same time?"); the answers are the facts whose
  interval is ``equal`` to, ``overlap``s or lies ``during`` (contains / is contained in) the
  condition's, and ``mix`` questions have 2-3 answers of different relations; distractors
  are facts of the same kind outside the interval and facts of another relation.
* **MS MARCO**: short web-like passages about invented places, people and firms; a query of
  each of the five query types, eight passages, one (sometimes two) holding the answer.

Invented names keep the problems unanswerable from world knowledge, so an untrained model
cannot solve them, while contexts stay short (4-10 sentences) so that a small student can
learn them from a few hundred examples (a full trace example is well under 300 tokens).

Determinism and disjoint splits: problem ``i`` of a split is drawn from its own random
stream (``dataset/seed/split/i/attempt``); every problem's text is hashed into one of five
buckets, bucket 0 being the test split's, so train and test never share a problem; within a
split duplicates are redrawn.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Callable

import pandas as pd

from . import decompose as dec
from .decompose import BABI_PAPER11, BABI_TASKS, COTEMPQA_SCENARIOS, MARCO_QUERY_TYPES

GENERATOR_VERSION = 1
MAX_ATTEMPTS = 400


# =============================================================================== common

def _bucket(problem: dict) -> str:
    sig = problem["question"] + "\n" + "\n".join(problem["context"])
    h = int(hashlib.sha256(sig.encode()).hexdigest()[:8], 16)
    return "test" if h % 5 == 0 else "train"


def categories(dataset: str) -> list[str]:
    if dataset == "cotempqa":
        return list(COTEMPQA_SCENARIOS)
    if dataset == "marco":
        return list(MARCO_QUERY_TYPES)
    if dataset == "babi":
        return [BABI_TASKS[t] for t in BABI_PAPER11]
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {dec.DATASETS}")


def generate(dataset: str, n: int, seed: int, split: str) -> pd.DataFrame:
    """``n`` synthetic problems of ``dataset`` for ``split`` in the data schema; categories
    in turn (problem ``i`` has category ``i mod k``). Same arguments, same problems."""
    from .data import frame, make_row  # late import: data imports this module

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cats = categories(dataset)
    maker = _MAKERS[dataset]
    rows, seen = [], set()
    for i in range(n):
        cat = cats[i % len(cats)]
        for attempt in range(MAX_ATTEMPTS):
            rng = random.Random(f"{dataset}/{seed}/{split}/{i}/{attempt}")
            p = maker(rng, cat)
            if p is None or _bucket(p) != split:
                continue
            key = p["question"] + "\n" + "\n".join(p["context"])
            if key in seen:
                continue
            seen.add(key)
            break
        else:
            raise RuntimeError(f"synthetic {dataset}/{cat}: no new {split} problem after "
                               f"{MAX_ATTEMPTS} attempts (problem {i}, seed {seed})")
        meta = {"generator": "helpers.synthetic", "generator_version": GENERATOR_VERSION,
                "seed": seed, "index": i, **p.get("meta", {})}
        row = make_row(id=f"{dataset}/synthetic/{split}/{i}", dataset=dataset, split=split,
                       question=p["question"], context=p["context"], answers=p["answers"],
                       category=cat, source="synthetic", meta=meta, relevant=p["relevant"])
        rows.append(row)
    return frame(rows)


def _shuffle_lines(rng: random.Random, lines: list[str], marks: dict[str, list[int]]) -> tuple[list[str], dict[str, list[int]]]:
    """Shuffle ``lines``; remap every index list in ``marks``."""
    order = list(range(len(lines)))
    rng.shuffle(order)
    pos = {old: new for new, old in enumerate(order)}
    return [lines[o] for o in order], {k: sorted(pos[i] for i in v) for k, v in marks.items()}


# =============================================================================== bAbI

PEOPLE = ["Mary", "John", "Sandra", "Daniel", "Bill", "Fred", "Julie", "Emma"]
ROOMS = ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"]
OBJECTS = ["football", "apple", "milk"]
MOVES = ["moved to", "went to", "journeyed to", "travelled to", "went back to"]
GETS = ["picked up", "got", "took", "grabbed"]
DROPS = ["dropped", "discarded", "put down", "left"]
NUMBER_WORDS = ["none", "one", "two", "three"]


def _babi_meta(task: int, n_lines: int, rel: list[int]) -> dict:
    ids = [str(k + 1) for k in range(n_lines)]
    return {"task": task, "task_name": BABI_TASKS[task], "line_ids": ids,
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


def babi_counting(rng):
    people = rng.sample(PEOPLE, 2)
    lines, holding, events = _object_world(rng, people, rng.randint(5, 9))
    cands = [p for p in people if events[p]]
    if not cands:
        return None
    p = rng.choice(cands)
    return _b(7, f"How many objects is {p} carrying?", lines, NUMBER_WORDS[len(holding[p])], events[p])


def babi_lists_sets(rng):
    people = rng.sample(PEOPLE, 2)
    lines, holding, events = _object_world(rng, people, rng.randint(5, 9))
    cands = [p for p in people if events[p]]
    if not cands:
        return None
    p = rng.choice(cands)
    ans = ",".join(holding[p]) if holding[p] else "nothing"
    return _b(8, f"What is {p} carrying?", lines, ans, events[p])


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
    lines, m = _shuffle_lines(rng, lines, {"rel": [kinds_rule[k], len(rules) + j]})
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
    body, m = _shuffle_lines(rng, lines[:-1], {"rel": rel[:2]})
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


# =============================================================================== CoTempQA

FIRST = ["Anna", "Mark", "Lena", "Paul", "Nina", "Omar", "Ruth", "Ivan", "Sara", "Tom", "Eva",
         "Leo", "Ida", "Max", "Zoe", "Ben", "Kate", "Hugo", "Alma", "Otto"]
LAST = ["Holt", "Dale", "Reed", "Moss", "Frost", "Vance", "Lowe", "Park", "Shaw", "Cole", "Hart",
        "Finch", "Wren", "Stone"]
STEMS = ["Redfield", "Ashford", "Northgate", "Greenhill", "Westbrook", "Oakmont", "Fairport",
         "Silverton", "Brookside", "Kingsley", "Millbank", "Clearwater", "Stonebridge", "Riverton"]
# relation -> (fact verb, condition-clause verb, question asking for it, object maker)
RELS = {
    "work": ("works for", "was working for", "which employer did {x} work for",
             lambda rng: f"{rng.choice(STEMS)} {rng.choice(['Labs', 'Bank', 'Museum', 'Press', 'Foundry'])}"),
    "position": ("holds the position of", "was holding the position of", "which position did {x} hold",
                 lambda rng: rng.choice(["treasurer", "mayor", "chief judge", "provost", "harbour master",
                                         "senator", "envoy", "city clerk", "chancellor", "magistrate"])),
    "member": ("is a member of the", "was a member of", "which political party did {x} belong to",
               lambda rng: f"{rng.choice(STEMS)} {rng.choice(['Party', 'League', 'Alliance'])}"),
    "attend": ("attended", "attended", "which school did {x} attend",
               lambda rng: f"{rng.choice(STEMS)} {rng.choice(['College', 'University', 'Academy'])}"),
    "play": ("plays for", "was playing for", "which team did {x} play for",
             lambda rng: f"{rng.choice(STEMS)} {rng.choice(['Rovers', 'United', 'Athletic'])}"),
}
PHRASES = ["at the same time", "concurrently", "simultaneously", "during the same time period",
           "within the same time interval", "during the same time span", "during the identical time period"]


def interval_relation(a: tuple[int, int], b: tuple[int, int]) -> str | None:
    """How interval ``b`` relates to ``a`` (inclusive years): equal, during (one contains the
    other), overlap (they share years, neither contains the other), or None (disjoint)."""
    if a == b:
        return "equal"
    if b[1] < a[0] or b[0] > a[1]:
        return None
    if (a[0] <= b[0] and b[1] <= a[1]) or (b[0] <= a[0] and a[1] <= b[1]):
        return "during"
    return "overlap"


def _interval_for(rng, cond, rel):
    s, e = cond
    for _ in range(50):
        if rel == "equal":
            iv = (s, e)
        elif rel == "during":
            if rng.random() < 0.5:
                a = rng.randint(s, e - 1)
                iv = (a, rng.randint(a + 1, e))
            else:
                iv = (rng.randint(s - 6, s), rng.randint(e, e + 6))
        elif rel == "overlap":
            if rng.random() < 0.5:
                iv = (rng.randint(s + 1, e), rng.randint(e + 1, e + 8))
            else:
                iv = (rng.randint(s - 8, s - 1), rng.randint(s, e - 1))
        else:  # disjoint
            single = rng.random() < 0.5  # half of them a single year ("in 1987")
            if rng.random() < 0.5:
                b = rng.randint(s - 12, s - 1)
                iv = (b, b) if single else (rng.randint(b - 8, b - 1), b)
            else:
                a = rng.randint(e + 1, e + 12)
                iv = (a, a) if single else (a, rng.randint(a + 1, a + 8))
        if iv[0] <= iv[1] and interval_relation(cond, iv) == (None if rel == "disjoint" else rel):
            return iv
    return None


def _when(iv):
    return f"in {iv[0]}" if iv[0] == iv[1] else f"from {iv[0]} to {iv[1]}"


def _fact(x, rel, y, iv):
    return f"{x} {RELS[rel][0]} {y} {_when(iv)}."


def _cotempqa(rng, cat):
    names = [f"{f} {l}" for f, l in zip(rng.sample(FIRST, 4), rng.sample(LAST, 4))]
    x = names[0]
    te = rng.choice(["S1_R1_O2", "S1_R2_O2", "S2_R1_O1"])
    r1 = rng.choice(list(RELS))
    r2 = rng.choice([r for r in RELS if r != r1]) if te == "S1_R2_O2" else r1
    start = rng.randint(1950, 2005)
    cond = (start, start + rng.randint(4, 12))
    rels = [cat] if cat != "mix" else None
    if cat == "mix":
        k = 3 if rng.random() < 0.15 else 2
        while True:
            rels = [rng.choice(["equal", "overlap", "during"]) for _ in range(k)]
            if len(set(rels)) >= 2:
                break
    used: set[str] = set()

    def new_obj(rel):
        for _ in range(50):
            y = RELS[rel][3](rng)
            if y not in used:
                used.add(y)
                return y
        return None

    o1 = new_obj(r1)
    facts, answers, ans_idx = [], [], []
    cond_fact = _fact(x, r1, o1, cond)
    facts.append(cond_fact)
    phrase = rng.choice(PHRASES)
    if te == "S2_R1_O1":
        others = names[1:]
        verb_q = {"work": "worked for", "position": "held the position of", "member": "was a member of",
                  "attend": "attended", "play": "played for"}[r1]
        question = f"While {x} {RELS[r1][1]} {o1}, who also {verb_q} {o1} {phrase}?"
        for who, rel in zip(others, rels):
            iv = _interval_for(rng, cond, rel)
            if iv is None:
                return None
            ans_idx.append(len(facts))
            facts.append(_fact(who, r1, o1, iv))
            answers.append(who)
        # distractors: a remaining person outside the interval, the subject elsewhere
        spare = [n for n in others if n not in answers]
        for who in spare[:1]:
            iv = _interval_for(rng, cond, "disjoint")
            if iv is None:
                return None
            facts.append(_fact(who, r1, o1, iv))
    else:
        question = f"While {x} {RELS[r1][1]} {o1}, {RELS[r2][2].format(x=x)} {phrase}?"
        for rel in rels:
            y, iv = new_obj(r2), _interval_for(rng, cond, rel)
            if y is None or iv is None:
                return None
            ans_idx.append(len(facts))
            facts.append(_fact(x, r2, y, iv))
            answers.append(y)
        y, iv = new_obj(r2), _interval_for(rng, cond, "disjoint")  # same kind, outside the interval
        if y is None or iv is None:
            return None
        facts.append(_fact(x, r2, y, iv))
    # a fact of another relation (may overlap: it answers a different question)
    r3 = rng.choice([r for r in RELS if r not in (r1, r2)])
    y3, iv3 = new_obj(r3), _interval_for(rng, cond, rng.choice(["overlap", "disjoint"]))
    if y3 is None or iv3 is None:
        return None
    facts.append(_fact(x, r3, y3, iv3))
    facts, m = _shuffle_lines(rng, facts, {"ans": ans_idx, "cond": [0]})
    # Ground truth must be exactly the facts that name an answer (no accidental substrings).
    if dec.relevant("cotempqa", {"context": facts, "answers": answers, "question": question}) != m["ans"]:
        return None
    if any(sum(a in f for f in facts) != 1 for a in answers):
        return None
    return {"question": question, "context": facts, "answers": answers, "relevant": m["ans"],
            "meta": {"scenario": cat, "triple_element": te, "condition": m["cond"],
                     "relations": rels, "condition_interval": list(cond)}}


# =============================================================================== MS MARCO

PLACES = ["Orlin", "Tavask", "Merrowby", "Quenford", "Halvik", "Droske", "Pellam", "Vantor",
          "Skelby", "Arnhollow", "Brisket", "Coldharbor", "Essenmoor", "Fallowdene"]
PERSONS = [f"{f} {l}" for f in ["Ada", "Bram", "Cora", "Dov", "Elin", "Gus", "Hana", "Ivo"]
           for l in ["Vasker", "Morrell", "Tindal", "Okafor", "Linde", "Prasse"]]
FIRMS = [f"{s} {t}" for s in ["Kestrel", "Bluefen", "Ironwood", "Marlow", "Sunvale", "Tolliver"]
         for t in ["Works", "Company", "Group"]]
BOOKS = ["The Salt Orchard", "Winter Ledger", "A House of Reeds", "The Glass Ferry", "Northern Lanterns",
         "The Quiet Mill"]
GOODS = ["copper", "wool", "salt", "timber", "tea", "barley", "amber", "linen"]
ANIMALS = ["heron", "lynx", "stag", "otter", "falcon", "badger"]
REGIONS = ["Ashby", "Brenner", "Corran", "Dalmore", "Elstow", "Fenner"]
WORDS = ["velk", "tarrow", "quib", "morsel-lamp", "drennet", "spindrel", "hobbin"]
DESCS = ["a narrow wooden boat", "a copper cooking pot", "a woollen winter cloak", "a small bronze bell",
         "a folding garden chair", "a clay water jar", "a long iron key"]
GROUPS = ["river fishermen", "mountain shepherds", "village bakers", "coastal traders", "travelling players"]
PRODUCTS = ["hand-built clocks", "steel bicycle frames", "paper lanterns", "glass bottles",
            "leather saddles", "wool blankets"]


def _marco_world(rng):
    """A tiny invented world: one random value per (entity, attribute)."""
    return {
        "built": {p: str(rng.randint(1820, 1990)) for p in PLACES},
        "length": {p: str(rng.randint(40, 900)) for p in PLACES},
        "population": {p: f"{rng.randint(2, 90)},{rng.randint(0, 999):03d}" for p in PLACES},
        "export": {p: rng.choice(GOODS) for p in PLACES},
        "flag": {p: rng.choice(ANIMALS) for p in PLACES},
        "county": {p: f"{rng.choice(REGIONS)} county" for p in PLACES},
        "born": {h: rng.choice(PLACES) for h in PERSONS},
        "founder": {f: rng.choice(PERSONS) for f in FIRMS},
        "author": {b: rng.choice(PERSONS) for b in BOOKS},
        "makes": {f: rng.choice(PRODUCTS) for f in FIRMS},
        "desc": dict(zip(WORDS, rng.sample(DESCS, len(WORDS)))),
        "user": {w: rng.choice(GROUPS) for w in WORDS},
    }


# Each query template: type, entity pool, question, answer attribute, passage renderers.
# A passage's answer is never its last word, so word overlap sees it without punctuation.
MARCO_TEMPLATES = {
    "NUMERIC": [
        ("place", "what year was the {e} bridge built", "built",
         ["The {e} bridge was built in {v} by masons.", "Records date the {e} bridge to {v} or so."]),
        ("place", "how many people live in {e}", "population",
         ["{e} has {v} residents today.", "About {v} people live in {e} now."]),
    ],
    "ENTITY": [
        ("place", "what is the main export of {e}", "export",
         ["The main export of {e} is {v} by barge.", "{e} sells mostly {v} abroad."]),
        ("place", "what animal is on the flag of {e}", "flag",
         ["The flag of {e} shows {a} {v} in gold.", "{A} {v} is on the {e} flag."]),
    ],
    "LOCATION": [
        ("place", "where is {e} located", "county",
         ["{e} is a town in {v} near the hills.", "You find {e} in {v} by the canal."]),
        ("person", "where was {e} born", "born",
         ["{e} was born in {v} in spring.", "The birthplace of {e} is {v} town."]),
    ],
    "PERSON": [
        ("firm", "who founded {e}", "founder",
         ["{e} was founded by {v} in a shed.", "{v} started {e} with a loan."]),
        ("book", "who wrote {e}", "author",
         ["The novel {e} was written by {v} in exile.", "{v} is the author of {e} and more."]),
    ],
    "DESCRIPTION": [
        ("word", "what is a {e}", "desc",
         ["A {e} is {v} used by {u}.", "The word {e} names {v} in dialect."]),
        ("firm", "what does {e} make", "makes",
         ["{e} makes {v} for local shops.", "{e} has produced {v} for years."]),
    ],
}
POOLS = {"place": PLACES, "person": PERSONS, "firm": FIRMS, "book": BOOKS, "word": WORDS}
N_PASSAGES = 8


def _all_templates():
    return [t for ts in MARCO_TEMPLATES.values() for t in ts]


def _render(tpl, e, world, k=0):
    _, _, attr, forms = tpl
    v = world[attr][e]
    u = world["user"].get(e, "")
    art = "an" if v[:1].lower() in "aeiou" else "a"
    return forms[k].format(e=e, v=v, u=u, a=art, A=art.capitalize())


def _marco(rng, cat):
    world = _marco_world(rng)
    tpl = rng.choice(MARCO_TEMPLATES[cat])
    pool, qform, attr, _ = tpl
    e = rng.choice(POOLS[pool])
    question = qform.format(e=e)
    answer = world[attr][e]
    form = rng.randrange(2)
    passages = [_render(tpl, e, world, form)]
    selected = [1]
    if rng.random() < 0.25:  # a second passage with the answer; sometimes not marked selected
        passages.append(_render(tpl, e, world, 1 - form))
        selected.append(1 if rng.random() < 0.5 else 0)
    # hard negatives: same template, other entities; the same entity, other templates
    others = [x for x in POOLS[pool] if x != e and world[attr][x] != answer]
    for x in rng.sample(others, 3):
        passages.append(_render(tpl, x, world, rng.randrange(2)))
        selected.append(0)
    same_pool = [t for t in _all_templates() if t[0] == pool and t is not tpl]
    for t in same_pool[:1]:
        passages.append(_render(t, e, world, rng.randrange(2)))
        selected.append(0)
    while len(passages) < N_PASSAGES:
        t = rng.choice([t for t in _all_templates() if t is not tpl])
        x = rng.choice(POOLS[t[0]])
        if x == e or answer in _render(t, x, world, 0) + _render(t, x, world, 1):
            continue
        passages.append(_render(t, x, world, rng.randrange(2)))
        selected.append(0)
    if len(set(passages)) != len(passages):
        return None
    order = list(range(len(passages)))
    rng.shuffle(order)
    passages = [passages[o] for o in order]
    selected = [selected[o] for o in order]
    row = {"context": passages, "answers": [answer], "question": question}
    rel = dec.relevant("marco", row)
    holders = [i for i, p in enumerate(passages) if answer in p and e in p]
    if not rel or rel[0] not in holders:  # the rule must pick a passage that states the answer
        return None
    return {"question": question, "context": passages, "answers": [answer], "relevant": rel,
            "meta": {"query_type": cat, "is_selected": selected, "template": qform,
                     "answer_passages": holders}}


_MAKERS: dict[str, Callable[[random.Random, str], Any]] = {
    "babi": _babi, "cotempqa": _cotempqa, "marco": _marco,
}
