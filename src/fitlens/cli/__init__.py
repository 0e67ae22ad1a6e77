"""The command line: `fitlens demo`, `fitlens explain` (dispatch in `main`)."""
