"""Where the seed Keras 2 log lives: ``shared/fixtures`` beside the repository.

A git worktree under ``wt/NAME`` sits one folder deeper than the main checkout, so both the
repository's parent and grandparent are tried.
"""

from __future__ import annotations

from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = [base / "shared" / "fixtures" / "seed-keras2.log" for base in _REPO.parents[:2]]

#: The seed log (may not exist; tests that need it skip).
SEED = next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[0])
