"""The study's conditions: one table that every stage reads.

A *condition* is what a student is trained on (or that it is not trained at all). Each row of
:data:`TABLE` says everything the stages need to know about one condition:

=================  ==========================================================================
``name``           the condition's name (run folders, ``cfg["conditions"]``, items.parquet)
``family``         ``untrained`` (the base model), ``base`` (a trace set written by 03 from
                   the decomposed problems), ``derived`` (trained from other conditions'
                   trace files: ``krsl``), ``teacher`` (the reasoning teacher's think text,
                   written by 03's teacher section), ``tset`` (a base condition rebuilt on the
                   teacher set, also written by the teacher section)
``has_trace``      the training target holds a ``<think>`` trace (``False``: the answer alone)
``steps_scored``   the trace's classification and retrieval steps can be checked (``False``
                   for the teacher family's free prose: only the answer is scored)
``corrupts``       the steps of the correct trace this condition corrupts (``label``, ``ir``)
``derives_from``   the conditions it is made from: ``krsl`` trains on the (``correct``,
                   ``incorrect``) pairs; a ``tset_*`` condition is its base condition
                   restricted to the teacher set
``test_set``       the test file 05 evaluates it on: ``full`` (``test.parquet``) or
                   ``teacher`` (the teacher set's ``teacher_test.parquet``)
``builder``        the name of the function that builds its training examples (registered
                   with :func:`builds` by the module of the stage that writes it:
                   :mod:`helpers.traces` for ``base`` / ``tset``, :mod:`helpers.teacher` for
                   ``teacher``, :mod:`helpers.krsl` for ``derived``); ``None``: nothing to build
``colour``         its colour in every figure
``order``          its place in tables and figures (ascending)
``label``          its name in figure legends
=================  ==========================================================================

Adding a condition is one :class:`Condition` row (here, or :func:`register` at run time) and
its builder function (docs/architecture.md, "Add a condition"). This module imports nothing
from the package (every stage may read it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

UNTRAINED = "untrained"
FAMILIES = ("untrained", "base", "derived", "teacher", "tset")
STEPS = ("label", "ir")  # the steps a corruption can touch
TEST_SETS = ("full", "teacher")
# which stage writes a family's trace files (None: none are written for it)
_WRITTEN_BY = {"untrained": None, "base": "traces", "derived": None, "teacher": "teacher", "tset": "teacher"}


@dataclass(frozen=True)
class Condition:
    """One row of the table (the module docstring explains the fields)."""

    name: str
    family: str
    has_trace: bool
    builder: str | None
    colour: str
    order: float
    steps_scored: bool = False
    corrupts: tuple[str, ...] = ()
    derives_from: tuple[str, ...] = ()
    test_set: str = "full"
    label: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a condition needs a name, got {self.name!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family {self.family!r} is not one of {FAMILIES}")
        bad = [s for s in self.corrupts if s not in STEPS]
        if bad:
            raise ValueError(f"{self.name}: corrupts {bad}; a corruption touches {STEPS}")
        if self.test_set not in TEST_SETS:
            raise ValueError(f"{self.name}: test_set {self.test_set!r} is not one of {TEST_SETS}")
        if self.steps_scored and not self.has_trace:
            raise ValueError(f"{self.name}: steps_scored needs a trace (has_trace)")
        if self.family == "derived" and not self.derives_from:
            raise ValueError(f"{self.name}: a derived condition names the conditions it derives_from")
        if self.family in ("base", "teacher", "tset") and not self.builder:
            raise ValueError(f"{self.name}: a {self.family} condition names its builder")
        object.__setattr__(self, "corrupts", tuple(self.corrupts))
        object.__setattr__(self, "derives_from", tuple(self.derives_from))
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def written_by(self) -> str | None:
        """The stage that writes its trace file: ``traces`` (03), ``teacher`` (03's teacher
        section), or ``None`` (``untrained``; ``krsl`` reads its sources' files)."""
        return _WRITTEN_BY[self.family]

    @property
    def has_trace_file(self) -> bool:
        return self.written_by is not None


# seaborn's "colorblind" palette
_CB = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
       "#949494", "#ece133", "#56b4e9"]

_ROWS = [
    Condition("untrained", "untrained", has_trace=False, builder=None, colour="#b0b0b0", order=0,
              label="untrained (baseline)"),
    Condition("vanilla", "base", has_trace=False, builder="answer_only", colour=_CB[0], order=1),
    Condition("correct", "base", has_trace=True, steps_scored=True, builder="trace", colour=_CB[2], order=2),
    Condition("incorrect", "base", has_trace=True, steps_scored=True, corrupts=("label", "ir"),
              builder="trace", colour=_CB[3], order=3),
    Condition("krsl", "derived", has_trace=True, steps_scored=True, derives_from=("correct", "incorrect"),
              builder="krsl_pairs", colour=_CB[4], order=4),
    Condition("incorrect_class", "base", has_trace=True, steps_scored=True, corrupts=("label",),
              builder="trace", colour=_CB[1], order=5),
    Condition("incorrect_ir", "base", has_trace=True, steps_scored=True, corrupts=("ir",),
              builder="trace", colour=_CB[5], order=6),
    Condition("shuffled", "base", has_trace=True, steps_scored=True, builder="shuffled", colour=_CB[9], order=7),
    # the reasoning-teacher family (evaluated on the teacher set's test split): warm hues,
    # tset_* as their full-set twins
    Condition("teacher", "teacher", has_trace=True, builder="teacher_trace", test_set="teacher",
              colour=_CB[6], order=8),
    Condition("teacher_summary", "teacher", has_trace=True, builder="teacher_summary", test_set="teacher",
              colour=_CB[8], order=9),
    Condition("teacher_posthoc", "teacher", has_trace=True, builder="teacher_posthoc", test_set="teacher",
              colour=_CB[7], order=10),
    Condition("teacher_swapped", "teacher", has_trace=True, builder="teacher_swapped", test_set="teacher",
              colour="#8c564b", order=11),
    Condition("tset_vanilla", "tset", has_trace=False, derives_from=("vanilla",), builder="answer_only",
              test_set="teacher", colour="#6baed6", order=12),
    Condition("tset_correct", "tset", has_trace=True, steps_scored=True, derives_from=("correct",),
              builder="trace", test_set="teacher", colour="#74c476", order=13),
    Condition("tset_incorrect", "tset", has_trace=True, steps_scored=True, corrupts=("label", "ir"),
              derives_from=("incorrect",), builder="trace", test_set="teacher", colour="#fd8d3c", order=14),
]

#: name -> :class:`Condition`, the one table (extend with :func:`register`)
TABLE: dict[str, Condition] = {c.name: c for c in _ROWS}

#: builder name -> function (filled by the stage modules through :func:`builds`)
BUILDERS: dict[str, Callable[..., Any]] = {}


class UnknownCondition(KeyError, ValueError):
    """A condition name that is not in the table (a ``KeyError`` and a ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def get(name: str) -> Condition:
    """The table row of ``name``; an unknown name raises :class:`UnknownCondition` listing
    the known ones."""
    try:
        return TABLE[name]
    except (KeyError, TypeError):
        raise UnknownCondition(f"unknown condition {name!r}; known: {list(names())}") from None


def find(name: str) -> Condition | None:
    """The table row of ``name``, or ``None`` (for names that may legitimately be unknown,
    e.g. a re-scored file whose condition is ``unknown``)."""
    return TABLE.get(name) if isinstance(name, str) else None


def _match(value: Any, want: Any) -> bool:
    if want is None:
        return True
    if isinstance(want, (tuple, list, set, frozenset)):
        return value in want
    return value == want


def names(family: str | Iterable[str] | None = None, *, has_trace: bool | None = None,
          steps_scored: bool | None = None, test_set: str | None = None,
          written_by: str | Iterable[str | None] | None = None) -> tuple[str, ...]:
    """The names of the conditions that match every given filter, in display order
    (``order``, then name). ``family`` / ``written_by`` take one value or several."""
    rows = sorted(TABLE.values(), key=lambda c: (c.order, c.name))
    return tuple(c.name for c in rows
                 if _match(c.family, family if family is None or isinstance(family, str) else tuple(family))
                 and (has_trace is None or c.has_trace == has_trace)
                 and (steps_scored is None or c.steps_scored == steps_scored)
                 and (test_set is None or c.test_set == test_set)
                 and _match(c.written_by, written_by if written_by is None or isinstance(written_by, str)
                            else tuple(written_by)))


def order(values: Iterable[str]) -> list[str]:
    """The distinct ``values`` in display order: conditions of the table first (by
    ``order``), then any other names sorted."""
    vals = list(dict.fromkeys(values))
    known = [n for n in names() if n in vals]
    return known + sorted((v for v in vals if v not in TABLE), key=str)


def rank(name: str) -> float:
    """The display rank of ``name`` (``order``); after every known condition when unknown."""
    c = find(name)
    return c.order if c is not None else float("inf")


def colour(name: str) -> str | None:
    c = find(name)
    return c.colour if c is not None else None


def label(name: str) -> str:
    c = find(name)
    return c.label if c is not None else str(name)


def register(condition: Condition | None = None, *, replace_existing: bool = False, **fields: Any) -> Condition:
    """Add a row to the table (a :class:`Condition`, or its fields as keywords) and return
    it. A name already in the table is an error unless ``replace_existing``; a
    ``derives_from`` naming an unknown condition is an error."""
    c = condition if condition is not None else Condition(**fields)
    if fields and condition is not None:
        c = replace(condition, **fields)
    if c.name in TABLE and not replace_existing:
        raise ValueError(f"condition {c.name!r} is already in the table (replace_existing=True to change it)")
    missing = [d for d in c.derives_from if d not in TABLE and d != c.name]
    if missing:
        raise ValueError(f"{c.name}: derives_from names unknown conditions {missing}")
    TABLE[c.name] = c
    return c


def unregister(name: str) -> Condition:
    """Remove a row (tests that register a toy condition clean up with this)."""
    get(name)
    return TABLE.pop(name)


def builds(name: str, *, replace_existing: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register the decorated function as the builder called ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in BUILDERS and BUILDERS[name] is not fn and not replace_existing:
            raise ValueError(f"builder {name!r} is already registered ({BUILDERS[name].__module__}."
                             f"{BUILDERS[name].__qualname__})")
        BUILDERS[name] = fn
        return fn

    return deco


def builder(condition: str) -> Callable[..., Any]:
    """The builder function of ``condition`` (by its ``builder`` name). A name that no module
    registered is an error naming where builders live."""
    c = get(condition)
    if c.builder is None:
        raise ValueError(f"condition {condition!r} has no builder (family {c.family!r}: nothing to build)")
    if c.builder not in BUILDERS:
        raise LookupError(f"builder {c.builder!r} of condition {condition!r} is not registered: define it with "
                          f"@conditions.builds({c.builder!r}) in the module of the stage that writes it "
                          "(helpers.traces for base / tset, helpers.teacher for teacher, helpers.krsl for derived) "
                          "and import that module first")
    return BUILDERS[c.builder]


def as_dict(name: str) -> dict[str, Any]:
    """One row as a plain dict (for tables and stamps)."""
    c = get(name)
    return {f: getattr(c, f) for f in c.__dataclass_fields__} | {"written_by": c.written_by}


__all__ = ["Condition", "TABLE", "BUILDERS", "UNTRAINED", "FAMILIES", "TEST_SETS", "UnknownCondition", "get",
           "find", "names", "order", "rank", "colour", "label", "register", "unregister", "builds", "builder",
           "as_dict"]
