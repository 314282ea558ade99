"""A Python client of a running aggbook service: typed quotes and merged books over HTTP and WebSocket.

::

    import asyncio
    from aggbook.client import Client

    async def main() -> None:
        async with Client("http://127.0.0.1:8080") as client:
            print(await client.get_quote("BTC-USDT"))
            async for quote in client.quotes("BTC-USDT"):
                print(quote.symbol, quote.bid and quote.bid.price, quote.ask and quote.ask.price)

    asyncio.run(main())

``python -m aggbook.client URL quotes BTC-USDT`` prints quotes as they change.  This package imports
only aiohttp and orjson, never the service, the feeds or the simulator.
"""

from aggbook.client.api import Client
from aggbook.client.errors import AggbookError, ApiError, ErrorReply, ProtocolError, Unavailable
from aggbook.client.models import (
    Book,
    BookLevel,
    Delivery,
    Level,
    Quote,
    QuoteSide,
    Status,
    VenueAtBest,
    VenueBook,
    VenueQuote,
)
from aggbook.client.streams import Stream

__all__ = [
    "AggbookError",
    "ApiError",
    "Book",
    "BookLevel",
    "Client",
    "Delivery",
    "ErrorReply",
    "Level",
    "ProtocolError",
    "Quote",
    "QuoteSide",
    "Status",
    "Stream",
    "Unavailable",
    "VenueAtBest",
    "VenueBook",
    "VenueQuote",
]
