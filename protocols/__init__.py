"""Pure, sans-I/O codecs: bytes <-> typed values. No asyncio, serial, socket or clocks."""
