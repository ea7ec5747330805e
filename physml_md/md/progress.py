"""The progress bar of an MD run: tqdm in steps, with the simulated ns/day and the temperature."""

from __future__ import annotations

import sys
import time as clock

from physml_md.md.frame import Frame
from physml_md.units import DAY_TO_SECONDS, NS_TO_FS

__all__ = ["Progress"]


class Progress:
    """A tqdm bar in steps with simulated ns/day and the temperature (silent when disabled)."""

    def __init__(self, total: int, timestep_fs: float, enabled: bool):
        self.bar = None
        self.timestep_fs = timestep_fs
        self.start = clock.perf_counter()
        if enabled:
            from tqdm import tqdm

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
