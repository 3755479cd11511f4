"""What phf tells a person at the console, and the library noise it keeps off it.

* ``ProgressLog``: progress lines when the tqdm bar is off (``trainer.progress=false``: logs, batch jobs):
  step/total, loss, tokens/s, elapsed and ETA, on the first and the last logged step and otherwise at
  most one line every ``trainer.progress_every_s`` seconds, however small ``trainer.log_every`` is.
* ``quiet_hf_progress``: transformers' "Loading weights" / "Writing model shards" bars switched off
  around phf's own loads and saves (one bar per checkpoint says nothing; the user's own calls keep them).
* ``reader_gone``: ``phf-data … | head -1`` — the reader closed the pipe: stop quietly (no
  ``BrokenPipeError`` traceback, none at the interpreter's exit either).
* ``hide_packed_padding_warning``: transformers warns "We strongly recommend passing in an
  `attention_mask`" when a batch starts or ends with the pad token. phf's pad token is EOS, which
  separates the documents of a packed block: there is no padding to mask, so the warning is wrong for
  phf's forwards (training, validation loss, held-out loss). A filter drops exactly that message, and
  only while a phf function is on the call stack; the warning still reaches the user's own calls
  (unless phf's call came first in the process: transformers shows it once per process).

Nothing here imports torch or transformers at module level.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterator

PADDING_WARNING = "We strongly recommend passing in an `attention_mask`"
#: the logger transformers' ``warn_if_padding_and_no_attention_mask`` writes to
PADDING_WARNING_LOGGER = "transformers.modeling_utils"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for a progress line."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressLog:
    """One log line per logged training row, but at most one per ``every_s`` seconds, plus the first and
    the last. ETA = the remaining steps at the mean time per step since the first line (the first step
    also waits for the data stream to start, which would inflate the estimate); on the first line, since
    the start."""

    def __init__(self, logger: logging.Logger, total_steps: int, start_step: int, every_s: float,
                 enabled: bool = True, clock: Callable[[], float] = time.perf_counter):
        self.log, self.total, self.start, self.every_s = logger, total_steps, start_step, every_s
        self.enabled, self.clock = enabled, clock
        self.t0 = clock()
        self.last_line: float | None = None
        self.first: tuple[int, float] | None = None  # (step, time) of the first line

    def row(self, step: int, loss: float, tokens_per_s: float) -> bool:
        """Log the row if it is due; returns whether a line was written."""
        if not self.enabled:
            return False
        now = self.clock()
        due = self.last_line is None or step >= self.total or now - self.last_line >= self.every_s
        if not due:
            return False
        elapsed = now - self.t0
        since_step, since = self.first if self.first and step > self.first[0] else (self.start, self.t0)
        done = step - since_step
        eta = (now - since) / done * (self.total - step) if done > 0 else float("nan")
        self.first = self.first or (step, now)
        self.log.info("step %d/%d (%.0f%%) | loss %.4f | %s tokens/s | elapsed %s | ETA %s", step, self.total,
                      100 * step / self.total, loss, f"{tokens_per_s:,.0f}", duration(elapsed), duration(eta))
        self.last_line = now
        return True


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """transformers' progress bars off inside the block, as they were after it."""
    from transformers.utils import logging as hf_logging

    if not hf_logging.is_progress_bar_enabled():
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

    hub_was_disabled = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also the hub's bars
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()  # re-enables the hub's too: put them back as they were
        if hub_was_disabled:
            disable_progress_bars()


def plain(doc: str) -> str:
    """A docstring as a terminal shows it: reStructuredText markup dropped (````x````, ```x```,
    ``:func:`x```, ``**x**`` → x), the text otherwise as written. For ``--help``."""
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc)
    doc = re.sub(r"``([^`]+)``", r"\1", doc)
    doc = re.sub(r"`([^`]+)`", r"\1", doc)
    return re.sub(r"\*\*([^*]+)\*\*", r"\1", doc)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def summarised_logs(logger_name: str, what: str, into: logging.Logger) -> Iterator[None]:
    """A third-party library's start-up chatter in one line: the records of ``logger_name`` inside the block
    are collected instead of printed, then ``into`` logs one INFO line counting them (``what`` says what
    was happening) and each of them at DEBUG level (``hydra.verbose=LOGGER`` shows them); an ERROR or
    worse passes through as it was."""
    logger = logging.getLogger(logger_name)
    collect = _Collect()
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [collect], False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        for r in collect.records:
            if r.levelno >= logging.ERROR:
                logger.handle(r)
            else:
                into.debug("%s: %s", logger_name, r.getMessage())
        quiet = [r for r in collect.records if r.levelno < logging.ERROR]
        if quiet:
            by_level: dict[str, int] = {}
            for r in quiet:
                by_level[r.levelname] = by_level.get(r.levelname, 0) + 1
            into.info("%s: %s (%s lines of %s's log, at DEBUG level: hydra.verbose=%s shows them)", logger_name,
                      what, ", ".join(f"{n} {level}" for level, n in by_level.items()), logger_name, into.name)


def _called_from_phf() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("phf.") and name != __name__:
            return True
        frame = frame.f_back
    return False


class _PackedPaddingFilter(logging.Filter):
    """Drops transformers' attention-mask warning when phf made the call (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith(PADDING_WARNING) and _called_from_phf())


_PADDING_FILTER = _PackedPaddingFilter()


def hide_packed_padding_warning() -> None:
    """Install the filter on transformers' logger (once; idempotent)."""
    logger = logging.getLogger(PADDING_WARNING_LOGGER)
    if _PADDING_FILTER not in logger.filters:
        logger.addFilter(_PADDING_FILTER)


def reader_gone() -> None:
    """Call when a write to stdout raised ``BrokenPipeError`` (the reader, e.g. ``head``, has what it
    wanted and closed the pipe): stdout is pointed at ``/dev/null`` so the interpreter's final flush does
    not raise again at exit (the recipe of Python's ``signal`` documentation); the caller then returns."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
