"""Shared CLI pieces: consoles and the progress display every long command uses."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# emoji=False: a message naming `judge.py:one:` or `m:smile:` must print as written, not as
# an emoji (rich's `escape` leaves :codes: alone)
console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)

# The training metrics a progress display shows, in this order, where a step reports them.
SHOWN = (
    "loss",
    "rewards/accuracy",
    "rewards/margin",
    "accuracy",
    "margin",
    "reward",
    "kl",
    "kl_coef",
    "response_length",
    "monitor_flags",
    "tokens_per_s",
)


class StepProgress:
    """The progress of a long step, on stderr: rich's live bar on a terminal; anywhere else
    (CI, nohup, a log file), where the live bar shows nothing until the end, plain lines:

        sft step 3/24  loss=1.23  accuracy=0.5  12 s

    one per update, flushed at once, but at most one every `every` seconds (a 10,000-step run
    does not print 10,000 lines), always the first and the last, and on leaving the update
    not yet shown. Use it as a context manager and pass it as the progress callback of
    rlhfkit's long calls; it takes their three shapes:

        training    progress(step: int, total: int, metrics: dict[str, float])
        sampling    progress(done: int, total: int)
        evaluation  progress(what: str, done: int, total: int)

    `stage(label)` starts the next step under the same display (a pipeline's stages).
    """

    def __init__(
        self,
        label: str,
        note: str = "",
        *,
        every: float = 2.0,
        shown: Sequence[str] = SHOWN,
        live: bool | None = None,
        out: Console = err_console,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`note` shows until the first update ("loading model and data"); `live` chooses
        the display (default: the live bar where `out` is an interactive terminal)."""
        self.label, self.note, self.every, self.shown = label, note, every, shown
        self.out, self.clock = out, clock
        self.live = out.is_interactive if live is None else live
        self._bar: Progress | None = None
        self._task = TaskID(0)
        self._started = self._printed_at = clock()
        self._what: str | None = None
        self._pending = ""  # the last plain line, while it is not printed

    def __enter__(self) -> StepProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.out,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None, info=self.note)
        self.stage(self.label, self.note)
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        if self._bar is not None:
            self._bar.__exit__(*exc)  # type: ignore[arg-type]

    def stage(self, label: str, note: str = "") -> None:
        """Show the next step from here on: its own count, elapsed time and note."""
        self._flush()
        self.label, self.note = label, note
        self._started, self._what = self.clock(), None
        if self._bar is not None:
            self._bar.reset(self._task, total=None, description=label, info=note)
        elif note:
            self._print(f"{label}: {note}")

    def __call__(self, *args: Any) -> None:
        if len(args) == 3 and isinstance(args[0], str):  # evaluation
            what, done, total = args
            metrics: dict[str, float] = {}
        elif len(args) == 3:  # training
            done, total, metrics = args
            what = "step"
        else:  # sampling
            done, total = args
            what, metrics = "", {}
        info = "  ".join(f"{k}={metrics[k]:.3g}" for k in self.shown if k in metrics)
        if self._bar is not None:
            description = f"{self.label} {what}" if what and what != "step" else self.label
            self._bar.update(
                self._task, completed=done, total=total, description=description, info=info
            )
            return
        now = self.clock()
        count = f"{done}/{total}" if total else f"{done}"
        line = " ".join(p for p in (self.label, what, count) if p)
        self._pending = "  ".join(p for p in (line, info, f"{now - self._started:.0f} s") if p)
        first, last = what != self._what, bool(total) and done >= total
        self._what = what
        if first or last or now - self._printed_at >= self.every:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._print(self._pending)

    def _print(self, line: str) -> None:
        self.out.print(line, markup=False, highlight=False, soft_wrap=True)
        self.out.file.flush()
        self._pending, self._printed_at = "", self.clock()


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner on a terminal; elsewhere the message, once."""
    if not err_console.is_interactive:
        err_console.print(message, markup=False, highlight=False, soft_wrap=True)
        yield
        return
    with err_console.status(message):
        yield
