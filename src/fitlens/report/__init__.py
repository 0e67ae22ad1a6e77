"""Pictures and reports of a run: `History.plot`, ``fitlens report`` (HTML), ``fitlens show``.

Modules: `series` (per-batch curves rebuilt from the batch log), `facts` (gaps, forecasts, time,
how the run ended), `reader` (a run directory or a `History`), `plot` (the chart, matplotlib
imported only when drawing), `charts` (a `History` as chart panels), `html` (the self-contained
page), `show` (the terminal view) and `command` (the two subcommands).
"""
