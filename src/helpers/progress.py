"""Progress a person can see, for long loops: training steps, generated items, whole runs.

One :class:`Progress` per loop prints plain lines to stdout, which reach every place a
person watches: the terminal of ``make`` (papermill's ``--log-output`` forwards the
kernel's stdout), a notebook cell, a log file. So that a log file is not flooded, a line is
printed when the loop starts, then when ``interval_s`` (30 s) have passed since the
previous line or a further tenth of the work is done (but not within ``min_gap_s`` (5 s)
of the previous line), and when it ends (:class:`Cadence`). A 13-minute fine-tuning run
prints about 30 lines; a run of a few seconds prints two. Each line carries the position
(``step 40/120 (33%)``), the caller's fields (the loss), the throughput (tokens per second
since the loop started) and the time spent and left (``ETA``, from the average pace so
far)::

    [sft cotempqa/smollm2-135m/correct/seed0] step 40/120 (33%) | loss 1.204 | 812 tok/s | 4m10s elapsed | ETA 8m20s

Inside a Jupyter kernel with ipywidgets, a ``tqdm`` widget bar is drawn as well, updated on
every step (a widget is not written to the kernel's stdout, so it adds nothing to the
terminal or a log). Without ipywidgets no bar is drawn (rather than tqdm's text fallback
and its "IProgress not found" warning); the lines remain.

:func:`trainer_callback` adapts this to ``transformers.Trainer`` (loss from the logged
history, tokens from ``state.num_input_tokens_seen``).
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable, TextIO

INTERVAL_S = 30.0   # at most this long without a line
FRACTION = 0.1      # a line for every further tenth of the work ...
MIN_GAP_S = 5.0     # ... unless the previous line is younger than this


def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``1h44m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_rate(rate: float | None) -> str:
    if rate is None or not math.isfinite(rate):
        return "?"
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


class Cadence:
    """When to print: at the start and end of a loop of ``total`` units, and in between
    whenever ``interval_s`` have passed since the previous line, or the work done has reached
    a further multiple of ``fraction`` of ``total`` and ``min_gap_s`` have passed.

    ``clock`` is a function returning seconds (``time.monotonic``; tests pass a fake)."""

    def __init__(self, total: int, *, start: int = 0, interval_s: float = INTERVAL_S,
                 fraction: float = FRACTION, min_gap_s: float = MIN_GAP_S,
                 clock: Callable[[], float] = time.monotonic):
        self.total = max(0, int(total))
        self.interval_s = float(interval_s)
        self.fraction = float(fraction)
        self.min_gap_s = float(min_gap_s)
        self.clock = clock
        self.last = clock()
        self.next_mark = self._mark_after(start)
        self.ended = False

    def _mark_after(self, done: int) -> float:
        if self.total <= 0 or self.fraction <= 0:
            return math.inf
        k = math.floor(done / (self.fraction * self.total) + 1e-9) + 1
        return k * self.fraction * self.total

    def due(self, done: int) -> bool:
        """Whether a line is due now that ``done`` units are done (records the line if so)."""
        now = self.clock()
        if done >= self.total:
            hit = not self.ended
            self.ended = True
        else:
            gap = now - self.last
            hit = gap >= self.interval_s or (done >= self.next_mark - 1e-9 and gap >= self.min_gap_s)
        if hit:
            self.last = now
            self.next_mark = self._mark_after(done)
        return hit


def _in_kernel() -> bool:
    """Whether this runs inside a Jupyter kernel (a notebook, or papermill's kernel)."""
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:  # pragma: no cover - IPython without a shell
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def widget_bar(total: int, desc: str, leave: bool = True):
    """A tqdm widget bar when running in a Jupyter kernel with ipywidgets, else None."""
    if not _in_kernel():
        return None
    try:
        import ipywidgets  # noqa: F401
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:
        return None
    try:
        from IPython.display import display

        bar = notebook_tqdm(total=total, desc=desc, leave=leave, display=False)
        # shown without its text/plain copy: papermill's --log-output would print that
        # copy (a frozen "0%" bar) to the terminal, where the lines already report
        bundle = bar.container._repr_mimebundle_()
        display({k: v for k, v in bundle.items() if k != "text/plain"}, raw=True)
        bar.displayed = True
        return bar
    except Exception:  # a front end that cannot show widgets: the lines remain
        return None


class Progress:
    """Progress of one loop of ``total`` units (``unit``: ``step``, ``item``, ``run``).

    ``update(done, tokens=..., **fields)`` after each unit (``done``: the units done so far,
    counting those of an earlier session when ``start`` > 0; ``tokens``: the running count
    whose rate is shown as ``rate_label``; ``fields``: shown as ``name value``, floats with
    three decimals). ``close()`` prints the final line (once). Lines go to ``stream``
    (stdout); ``enabled=False`` (or ``total=0``) silences everything; ``bar`` (default: in a
    Jupyter kernel) adds a widget bar; ``cadence``: :class:`Cadence`'s timing arguments.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "step", start: int = 0, tokens: int = 0,
                 rate_label: str = "tok/s", enabled: bool = True, bar: bool | None = None,
                 leave_bar: bool = True, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, **cadence: Any):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.start, self.tokens0 = int(start), int(tokens)
        self.rate_label = rate_label
        self.enabled = enabled and self.total > 0  # an empty loop says nothing
        self.stream = stream
        self.clock = clock
        self.t0 = clock()
        self.done, self.tokens, self.fields = self.start, self.tokens0, {}
        self.cadence = Cadence(self.total, start=self.start, clock=clock, **cadence)
        self.closed = False
        self.lines: list[str] = []
        self.bar = None
        if self.enabled and bar is not False:
            self.bar = widget_bar(self.total, desc, leave=leave_bar)
            if self.bar is not None and self.start:
                self.bar.update(self.start)
        if self.enabled:
            resumed = f", resuming after {self.start}" if self.start else ""
            self._emit(f"[{desc}] {self.total} {unit}s{resumed}")

    # ---------------------------------------------------------------------------------
    def _emit(self, line: str) -> None:
        self.lines.append(line)
        print(line, file=self.stream or sys.stdout, flush=True)

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def rate(self) -> float | None:
        el = self.elapsed()
        return (self.tokens - self.tokens0) / el if el > 0 else None

    def eta(self) -> float | None:
        did = self.done - self.start
        if did <= 0:
            return None
        return (self.total - self.done) * self.elapsed() / did

    def line(self, final: bool = False) -> str:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"[{self.desc}] {self.unit} {self.done}/{self.total}{pct}"]
        for k, v in self.fields.items():
            if v is not None:
                parts.append(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}")
        if self.rate_label:
            parts.append(f"{format_rate(self.rate())} {self.rate_label}")
        parts.append(f"{format_duration(self.elapsed())} elapsed")
        if final:
            parts.append("done" if self.done >= self.total else "stopped before the end")
        else:
            parts.append(f"ETA {format_duration(self.eta())}")
        return " | ".join(parts)

    def update(self, done: int, *, tokens: int | None = None, **fields: Any) -> bool:
        """Record progress; returns whether a line was printed."""
        if not self.enabled or self.closed:
            return False
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
        self.done = int(done)
        if tokens is not None:
            self.tokens = int(tokens)
        self.fields.update(fields)
        if self.bar is not None:
            post = {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in self.fields.items() if v is not None}
            if self.rate_label:
                post[self.rate_label] = format_rate(self.rate())
            self.bar.set_postfix(post, refresh=False)
        if self.done >= self.total:
            self.close()
            return True
        if self.cadence.due(self.done):
            self._emit(self.line())
            return True
        return False

    def skip(self, done: int, **fields: Any) -> bool:
        """Like :meth:`update` for units that took no work (a fresh run that was skipped):
        they count as done but not toward the pace the ETA is computed from."""
        self.start += max(0, int(done) - self.done)
        return self.update(done, **fields)

    def close(self) -> None:
        """The final line (``done``, or ``stopped before the end``), once."""
        if self.closed or not self.enabled:
            self.closed = True
            return
        self.closed = True
        self.cadence.ended = True
        self._emit(self.line(final=True))
        if self.bar is not None:
            self.bar.close()


def over(items, desc: str, enabled: bool = True):
    """``items`` with a tqdm bar headed ``desc`` when ``enabled`` (a stage's loop over datasets),
    else ``items`` as they are."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc)


def mtime(path) -> float | None:
    """Modification time of ``path`` (None when missing): a loop over runs compares it before
    and after a run to tell a skipped (fresh) run from one that worked (:meth:`Progress.skip`)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def trainer_callback(desc: str, *, enabled: bool = True, bar: bool | None = None,
                     clock: Callable[[], float] = time.monotonic, stream: TextIO | None = None, **cadence: Any):
    """A ``transformers.TrainerCallback`` that reports a training run with :class:`Progress`:
    optimizer steps out of ``max_steps`` (a resumed run counts from its checkpoint), the mean
    logged training loss since the previous line, tokens per second from
    ``state.num_input_tokens_seen`` (non-padding tokens), elapsed time and ETA. The
    trainer's own bar and per-step log printing are replaced by it
    (:func:`helpers.sft.build_trainer`)."""
    from transformers import TrainerCallback

    class TrainProgress(TrainerCallback):
        def __init__(self):
            self.progress: Progress | None = None
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.progress = Progress(state.max_steps, desc, unit="step", start=state.global_step,
                                     tokens=int(state.num_input_tokens_seen or 0), enabled=enabled,
                                     bar=bar, leave_bar=False, clock=clock, stream=stream, **cadence)

        def _update(self, state) -> None:
            loss = sum(self.losses) / len(self.losses) if self.losses else None
            if self.progress.update(state.global_step, tokens=int(state.num_input_tokens_seen or 0), loss=loss):
                self.losses = []

        def on_step_end(self, args, state, control, **kw):
            if self.progress is not None and not control.should_log:  # else on_log reports the step
                self._update(state)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.progress is None or not logs or "loss" not in logs:
                return
            self.losses.append(float(logs["loss"]))
            self._update(state)

        def on_train_end(self, args, state, control, **kw):
            if self.progress is not None:
                self.progress.close()

    return TrainProgress()
