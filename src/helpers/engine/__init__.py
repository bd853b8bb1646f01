"""The speed engine: the CPU work that makes generation and training fast, kept apart from the
study's plain path (:mod:`helpers.generate`, :mod:`helpers.sft`).

The profile key ``engine`` picks it: ``fast`` (the default) runs :mod:`.generation` (shared
prefix cache, refilled slots, length-grouped prefill, a cache with room to grow, a bf16 copy
with a matrix-product decode attention on CPUs with native bf16) and :mod:`.training` (loss
only at labelled positions, the shared opening run once per batch, fast LoRA dropout, the
seeded length-grouped sampler); ``plain`` runs batched ``model.generate`` and a stock
``transformers.Trainer`` with the completion mask. Both give the same greedy outputs and the
same loss (``tests/test_engine.py``); `make bench` measures the difference in speed. This
package imports nothing from the study's stages (only :mod:`helpers.models`).
"""
from __future__ import annotations

from typing import Any, Mapping

ENGINES = ("fast", "plain")
DEFAULT = "fast"


def choice(cfg: Mapping[str, Any] | None) -> str:
    """The engine ``cfg`` asks for (key ``engine``; default ``fast``); an unknown name is an
    error."""
    name = (cfg or {}).get("engine") or DEFAULT
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {name!r}")
    return name
