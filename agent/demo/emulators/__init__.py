"""Device emulators speaking the real wire protocols, for tests and ``hall-agent demo``."""
