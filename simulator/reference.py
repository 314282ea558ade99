"""The shared reference price of one instrument: what every simulated venue's market follows.

Real venues quote the same instrument around one fair price, each with its own spread, tick,
depth and delay, so the consolidated best bid and best ask come from different venues and are now
and then crossed.  The simulator gets this from one seeded process per symbol that every venue's
:class:`~aggbook.simulator.market.MarketModel` reads with its own lag, offset and noise.

The walk is a pure function of ``(symbol, seed, index)``: every venue builds its own instance and
reads it at non-decreasing indices, so venues share no state (and no start order, no wall clock)
yet see one price path, and a venue's market is reproducible from the seed alone.  Prices are
integers in ticks of the instrument's reference grid (``SymbolSpec.tick``), so the path is exact.

Between two indices the price now and then moves by a tick (up to ``volatility`` ticks), and
rarely jumps by a few basis points (``jump_chance``, ``jump_bps``): the moments a slower venue
briefly lags the others.  Away from its start a move back is likelier (``reversion``: the chance
of an up move drops by ``reversion`` times the relative distance), so a long run stays near the
symbol's quoted mid.
"""

from __future__ import annotations

import random
from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # market.py imports this module
    from aggbook.simulator.market import SymbolSpec

LOOKBACK = 512  # past indices kept, so a venue may read the walk this many steps behind the newest read


class ReferencePrice:
    """A seeded walk of one symbol's reference price, in ticks of ``spec.tick``."""

    def __init__(
        self,
        spec: SymbolSpec,
        seed: int = 1,
        *,
        volatility: int = 1,
        reversion: float = 5.0,
        jump_chance: float = 1 / 600,
        jump_bps: tuple[float, float] = (3.0, 12.0),
    ) -> None:
        self.spec = spec
        self.start = max(1, int(spec.mid / spec.tick))
        self.volatility = max(0, volatility)
        self.reversion = reversion
        self.jump_chance = jump_chance
        self.jump_bps = jump_bps
        self._rng = random.Random(f"reference:{spec.canonical}:{seed}")
        self._index = 0
        self._ticks = self.start
        self._kept: deque[int] = deque([self.start], maxlen=LOOKBACK)

    @property
    def index(self) -> int:
        """The newest index computed so far."""
        return self._index

    def ticks_at(self, index: int) -> int:
        """The reference price at ``index`` in reference ticks (index 0 is the symbol's quoted mid).

        Indices below 0 read index 0.  An index more than ``LOOKBACK`` below the newest one read is
        no longer kept: ``ValueError``, since answering anything else would break reproducibility.
        """
        index = max(0, index)
        while self._index < index:
            self._advance()
        back = self._index - index
        if back >= len(self._kept):
            raise ValueError(f"reference index {index} is more than {LOOKBACK} behind {self._index}")
        return self._kept[-1 - back]

    def price_at(self, index: int) -> Decimal:
        return (Decimal(self.ticks_at(index)) * self.spec.tick).quantize(self.spec.tick)

    def _advance(self) -> None:
        rng = self._rng
        ticks = self._ticks
        # the further from the start, the likelier a move back: a long run stays near the quoted mid,
        # without the steady trend a pull would give (a trend makes every lagging venue cross the others)
        up = min(0.95, max(0.05, 0.5 - self.reversion * (ticks - self.start) / self.start))
        move = 0
        if self.volatility and rng.random() < 0.25:
            move = rng.randint(1, self.volatility) * (1 if rng.random() < up else -1)
        if rng.random() < self.jump_chance:
            bps = rng.uniform(*self.jump_bps)
            size = max(1, round(ticks * bps / 10_000))
            move += size if rng.random() < up else -size
        self._ticks = max(max(1, self.start // 2), ticks + move)
        self._index += 1
        self._kept.append(self._ticks)
