"""fitlens: the truth about neural-network training progress."""

__version__ = "0.1.0"
