"""Framework integrations: fitlens's display and History from inside other training loops.

`keras` and `lightning` turn their framework's callback hooks into calls on the same
`fitlens.view.lens.Lens` that `fitlens.fit` drives. Each imports its framework at import time, so
import it only through ``fitlens.keras`` / ``fitlens.lightning`` (or these modules) when the
extra is installed; nothing in the layers below imports this package.
"""
