"""`fitlens explain`: read a Keras training log and explain the jumps between epochs.

The package never imports torch: it parses text, reconstructs per-window means with provable
bounds, and renders a report. Entry point: :func:`fitlens.explain.command.main`.
"""
