"""The gate: the rule language (pure) and where the baseline comes from."""
