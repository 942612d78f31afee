"""Task sources: synthetic task families and real few-shot datasets."""
from metajax.data import sinusoid

__all__ = ["sinusoid"]
