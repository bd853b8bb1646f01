"""Helpers for the trace-based distillation study (one thin package shared by the notebooks).

Modules
-------
paths      path constants (one place for every folder the study reads or writes)
config     profiles, config hashing, run directories, provenance (versions, git commit)
models     the embedded SmolLM2 student, the tiny smoke model, hub loading that fails fast
data       the three datasets in one schema (real files, hub, offline generators)
synthetic  seeded offline generators with exact ground truth
decompose  the rule-based decomposition: classification label + relevant facts
traces     vanilla / correct / incorrect (+ ablation) chat examples
chat       chat templates per model family
sft        LoRA / QLoRA / full fine-tuning (plain: a stock Trainer on the completion mask)
krsl       EDIT key-step learning from dual traces
generate   batched greedy generation that resumes (plain: batched model.generate)
engine/    the speed engine picked by `engine: fast` (generation and training tricks)
scoring    answer and trace scoring (strict and compat)
rescore    `python -m helpers.rescore`: score published prediction files
stats      2x2 tables, chi-square, Fisher, phi, CMH, McNemar, Cochran's Q
figures    every figure, one function and one fixed file name each
teacher    reasoning-teacher backends (API, local, file), call cache, derived sets
teacher_stage  the teacher section of 03_traces and the teacher analysis of 06
"""

__version__ = "0.1.0"
