r"""Progress of an epoch: a bar on a terminal, a plain line now and then otherwise.

On a terminal (``stream.isatty()``) the bar is redrawn in place (``\r``) at most ten times
a second and erased when the epoch ends, so the epoch table stays clean. Elsewhere (a log
file, CI) a plain line is printed at most every ``interval`` seconds: short epochs print
nothing, their table row is the progress line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Progress of one loop of ``total`` steps.

    Args:
        label: what is running (``"epoch 3/30"``).
        total: the number of steps (None: unknown).
        stream: where to write (default: ``sys.stdout``).
        tty: draw a bar (default: whether ``stream`` is a terminal).
        interval: seconds between plain lines when not drawing a bar.
        width: the bar's width in characters.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 10.0,
        width: int = 30,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self.interval = interval
        self.width = width
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_line = self.start
        self._drawn = False
        self.postfix = ""

    def update(self, steps: int = 1, postfix: str | None = None) -> None:
        """Advance by ``steps`` (and show ``postfix``, e.g. the running loss)."""
        self.done += steps
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if self.tty:
            if now - self._last_draw >= 0.1 or self.done == self.total:
                self._draw(now)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            print(f"{self.label}: {self._count()} {self.postfix}".rstrip(), file=self.stream)
            self.stream.flush()

    def due(self) -> bool:
        """Whether the next :meth:`update` redraws the bar (compute a postfix only then)."""
        if not self.tty:
            return False
        last_step = self.total is not None and self.done + 1 >= self.total
        return last_step or time.perf_counter() - self._last_draw >= 0.1

    def close(self) -> None:
        """Erase the bar (terminal) so the next line starts clean."""
        if self.tty and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

    def _count(self) -> str:
        return f"{self.done}/{self.total}" if self.total else str(self.done)

    def _draw(self, now: float) -> None:
        self._last_draw = now
        elapsed = now - self.start
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = round(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            eta = elapsed / frac - elapsed if frac > 0 else 0.0
            text = f"{self.label} [{bar}] {self._count()} {elapsed:.0f}s<{eta:.0f}s"
        else:
            text = f"{self.label} {self._count()} {elapsed:.0f}s"
        if self.postfix:
            text += f" {self.postfix}"
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self._drawn = True
