"""hall-agent: runs a public service hall's queue and hardware, offline-first."""

__version__ = "0.1.0"
