"""The numeric core: streaming estimators, the gap decomposition, jump forecasts, the History records (numpy only, no torch)."""
