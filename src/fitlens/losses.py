"""`fitlens.losses`: the Keras loss classes with ``from_logits`` selectable.

``loss="binary_crossentropy"`` equals ``BinaryCrossentropy()`` (probabilities, Keras's default);
``BinaryCrossentropy(from_logits=True)`` reads logits. The implementation lives in
`fitlens.adapters.losses`; this module is the public import path.
"""

from fitlens.adapters.losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
)

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy"]
