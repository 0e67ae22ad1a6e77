"""`fitlens.lightning`: the lightning callback (`FitlensCallback`); needs `pip install 'fitlens[lightning]'`.

The implementation lives in `fitlens.integrations.lightning`; this module is the public import path.
"""

from fitlens.integrations.lightning import FitlensCallback

__all__ = ["FitlensCallback"]
