"""All simulated venues together: what tests, benchmarks and ``aggbook demo`` start.

``async with SimulatedExchange() as sim:`` starts every venue on its own free
port on 127.0.0.1; ``sim.venues["binance"].urls()`` gives the base URLs to put in
a feed's config in place of the real endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import fields

from aggbook.feeds.registry import venue_specs
from aggbook.simulator.faults import Fault, FaultInjector
from aggbook.simulator.market import DEFAULT_SYMBOLS, SymbolSpec
from aggbook.simulator.venue import VenueOptions, VenueServer


def venue_classes() -> dict[str, type[VenueServer]]:
    """Venue kind -> simulator class, from each venue's spec (its feed module declares the class)."""
    return {kind: spec.simulator_class() for kind, spec in venue_specs().items()}


class SimulatedExchange:
    """Starts and stops a set of simulated venues sharing one seed."""

    def __init__(
        self,
        venues: Iterable[str] | None = None,
        symbols: Iterable[SymbolSpec] = DEFAULT_SYMBOLS,
        *,
        seed: int = 1,
        rate: float = 20.0,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[Fault | str] | None = None,
        host: str = "127.0.0.1",
        venue_options: Mapping[str, Mapping[str, object]] | None = None,
        ports: Mapping[str, int] | None = None,
        **common: object,
    ) -> None:
        """``fault_rate`` > 0 turns on random faults, seeded per venue from ``seed``.

        ``fault_kinds`` names the faults random mode may fire (default: gap, duplicate and
        reorder, the ones a feed survives without reconnecting); any named fault may be listed.
        ``common`` are options every venue has (:class:`VenueOptions`: ``autostart_pump``,
        ``depth``, ``history_len``); ``venue_options`` gives one venue its own options by name
        (``{"mexc": {"idle_timeout": 5.0}}``), each checked by that venue's options class.
        ``ports`` gives a venue a fixed port (``{"binance": 9100}``), so a stopped venue can be started
        again at the same URL; a venue not named there, or given 0, takes any free port.
        """
        shared = {f.name for f in fields(VenueOptions)} - {"seed", "rate", "faults"}
        if set(common) - shared:
            raise TypeError(f"{', '.join(sorted(set(common) - shared))}: not an option every simulated venue "
                            f"has ({', '.join(sorted(shared))}); pass venue-specific ones in venue_options")
        classes = venue_classes()
        kinds = {Fault(k) for k in fault_kinds} if fault_kinds is not None else None
        names = list(venues) if venues is not None else list(classes)
        per_venue = dict(venue_options or {})
        unknown = sorted({*names, *per_venue} - set(classes))
        if unknown:
            raise ValueError(f"unknown simulated venue(s) {', '.join(unknown)}; known: {', '.join(classes)}")
        strays = sorted(set(per_venue) - set(names))
        if strays:
            raise ValueError(f"venue_options for venues not started: {', '.join(strays)}")
        self.ports = dict(ports or {})
        strays = sorted(set(self.ports) - set(names))
        if strays:
            raise ValueError(f"ports for venues not started: {', '.join(strays)}")
        symbols = list(symbols)
        self.host = host
        self.venues: dict[str, VenueServer] = {
            name: classes[name](
                symbols,
                classes[name].Options.build(name, {
                    "seed": seed,
                    "rate": rate,
                    "faults": FaultInjector(seed=seed + i, rate=fault_rate, allowed=kinds),
                    **common,
                    **per_venue.get(name, {}),
                }),
            )
            for i, name in enumerate(names)
        }

    async def start(self) -> None:
        await asyncio.gather(*(v.start(self.host, self.ports.get(n, 0)) for n, v in self.venues.items()))

    async def stop(self) -> None:
        await asyncio.gather(*(v.stop() for v in self.venues.values()), return_exceptions=True)

    def pause(self) -> None:
        for venue in self.venues.values():
            venue.pause()

    def resume(self) -> None:
        for venue in self.venues.values():
            venue.resume()

    def quiet(self, symbol: str, seconds: float) -> None:
        """Keep ``symbol`` (canonical) still for ``seconds`` at every venue that lists it."""
        for venue in self.venues.values():
            with contextlib.suppress(KeyError):
                venue.quiet(symbol, seconds)

    def __getitem__(self, name: str) -> VenueServer:
        return self.venues[name]

    async def __aenter__(self) -> SimulatedExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
