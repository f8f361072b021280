"""The base of every driver error: ``except DriverError`` catches any device I/O failure
a driver reports (each driver's own errors derive from it)."""


class DriverError(Exception):
    """Base of the drivers' errors; the message says what to check."""
