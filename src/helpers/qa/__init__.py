"""The datasets of the study: one module per dataset over one schema (:mod:`.base`).

``get(name)`` returns a dataset's :class:`~helpers.qa.base.DatasetSpec` (its labels, rules,
trace sentences, rendering, scorer and corruption hooks, loaders, generator, display name);
``names()`` lists the registered datasets in order; ``register(spec)`` adds one. The generic
modules call ``qa.get(dataset).<hook>`` and never branch on a dataset's name.

Adding a dataset (docs/architecture.md): write ``qa/<name>.py`` building a ``SPEC =
base.DatasetSpec(...)``, add its module name to :data:`DATASETS`, and name it in the
profiles' ``datasets`` (with its ``n_train`` / ``n_test`` where those are per dataset).
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import DatasetSpec

# The study's datasets, in the order every table and figure shows them (the one definition).
DATASETS = ("cotempqa", "marco", "babi")

_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the registry (after the built-in datasets). A name already taken is an
    error unless ``replace``."""
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register() takes a DatasetSpec, not {type(spec).__name__}")
    if spec.name not in DATASETS:
        _load_builtins()  # the built-in datasets come first, whatever is registered when
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    if "default" not in spec.variants:
        raise ValueError(f"dataset {spec.name!r}: its variants {spec.variants} lack 'default'")
    if "{label}" not in spec.classification or "{facts}" not in spec.retrieval:
        raise ValueError(f"dataset {spec.name!r}: the classification sentence needs {{label}} and "
                         "the retrieval sentence {facts}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a dataset added with :func:`register` (the built-in ones stay)."""
    if name in DATASETS:
        raise ValueError(f"{name!r} is a built-in dataset")
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    for name in DATASETS:
        if name not in _REGISTRY:
            register(importlib.import_module(f"{__name__}.{name}").SPEC)


def get(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; an unknown name is an error listing the known ones."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; expected one of {names()}") from None


def names() -> tuple[str, ...]:
    """The registered datasets: the built-in ones in :data:`DATASETS` order, then the added."""
    _load_builtins()
    return tuple(_REGISTRY)


def generate(name: str, n: int, seed: int, split: str) -> Any:
    """``n`` synthetic problems of dataset ``name`` for ``split`` (interim rows)."""
    spec = get(name)
    if spec.generate is None:
        raise ValueError(f"dataset {name!r} has no synthetic generator")
    return spec.generate(n, seed, split)
