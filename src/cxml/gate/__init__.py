"""The gate: its rule language (pure), deciding it, and where the baseline comes from."""
