"""The base of every codec error: ``except ProtocolError`` catches any value or byte
sequence a protocol refuses (each protocol's own errors derive from it)."""


class ProtocolError(Exception):
    """Base of the protocols' errors; the message says what went wrong."""
