"""`fitlens.keras`: the keras callback (`FitlensCallback`); needs `pip install 'fitlens[keras]'`.

The implementation lives in `fitlens.integrations.keras`; this module is the public import path.
"""

from fitlens.integrations.keras import FitlensCallback

__all__ = ["FitlensCallback"]
