"""Where the seed Keras 2 log lives: shipped with the tests, in ``tests/explain/data``."""

from __future__ import annotations

from pathlib import Path

#: The seed log (see ``data/README.md`` for its source).
SEED = Path(__file__).resolve().parent / "data" / "seed-keras2.log"
