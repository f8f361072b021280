"""``python -m agent.config``: write the JSON Schema (scripts/gen-schema) or check a file."""

from __future__ import annotations

import sys

from agent.config.loading import main

if __name__ == "__main__":
    sys.exit(main())
