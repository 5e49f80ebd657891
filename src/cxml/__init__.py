"""cxml: Continuous X for machine learning on GitHub."""

__version__ = "0.1.0"
