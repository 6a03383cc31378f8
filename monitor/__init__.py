"""monitor: a streaming financial-sentiment monitor."""

__version__ = "0.1.0"
