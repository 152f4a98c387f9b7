"""The pure engine: no I/O, no asyncio, no framework imports; time is passed in."""
