"""Data, models and the training machinery: the only part that imports torch at module level."""
