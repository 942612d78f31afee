"""What every experiment shares: the run folder, config overrides, the run record."""
from metajax.experiment import machine

__all__ = ["machine"]
