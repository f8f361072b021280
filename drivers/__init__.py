"""Device drivers: asyncio I/O to one device kind each."""
