"""Framework integrations: fitlens's display and History from inside other training loops.

`observer` (framework-free) turns per-batch running means into exact batch values, estimators,
a `History` and the display; `keras` and `lightning` adapt their framework's callback hooks to
it. Each framework module imports its framework at import time, so import it only through
``fitlens.keras`` / ``fitlens.lightning`` (or these modules) when the extra is installed.
"""
