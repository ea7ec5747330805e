"""Signals during an MD run: SIGINT (Ctrl-C) and SIGTERM stop ``run_md`` at the last whole frame.

``Interrupts`` installs the handlers for a ``with`` block; a signal raises ``Interrupted`` only inside
``armed()`` (around the engine's steps), so that no frame is ever half-written.

``physml-md`` arms one around every command (``physml_md.cli.main.main``): training, export and the rest stop where they
are (their files are written atomically, so none is half-written) with one sentence and exit status 128 + the
signal's number, and Lightning, which turns a KeyboardInterrupt into ``sys.exit(1)``, lets ``Interrupted`` through.
``run_md`` installs its own inside it, so MD still stops at a whole frame.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time as clock
from typing import Any, Dict, Iterator

from tqdm import tqdm

from physml_md.md.frame import Frame
from physml_md.units import DAY_TO_SECONDS, NS_TO_FS

__all__ = ["Interrupted", "Interrupts", "Progress"]


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while ``run_md`` was stepping (a BaseException, like KeyboardInterrupt)."""


class Interrupts:
    """SIGINT and SIGTERM handlers for the ``with`` block (main thread only: elsewhere Python delivers no signals).

    Outside ``armed()`` (a frame being written, files being closed) a signal is only noted and raised at the next
    ``armed()``. Only the first signal counts; the previous handlers come back at the end.
    """

    def __init__(self):
        self.signal_name: str | None = None
        self._armed = False
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> bool:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False

    def _handle(self, number, _frame) -> None:
        if self.signal_name is not None:
            return
        self.signal_name = signal.Signals(number).name
        if self._armed:
            self._armed = False
            raise Interrupted(self.signal_name)

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        if self.signal_name is not None:
            raise Interrupted(self.signal_name)
        self._armed = True
        try:
            yield
        finally:
            self._armed = False


class Progress:
    """A tqdm bar in steps with simulated ns/day and the temperature (silent when disabled)."""

    def __init__(self, total: int, timestep_fs: float, enabled: bool):
        self.bar = None
        self.timestep_fs = timestep_fs
        self.start = clock.perf_counter()
        if enabled:
            self.bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int, frame: Frame, done: int) -> None:
        if self.bar is None:
            return
        seconds = clock.perf_counter() - self.start
        ns_day = done * self.timestep_fs / NS_TO_FS / (seconds / DAY_TO_SECONDS) if seconds > 0 else 0.0
        self.bar.set_postfix_str(f"{ns_day:.3g} ns/day, T={frame.temperature_k:.0f} K", refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
