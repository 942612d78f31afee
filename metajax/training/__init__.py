"""Meta-training: :func:`fit` (compiled chunks of steps, progress, NaN guard)
and atomic checkpoints that resume exactly."""
from metajax.training import checkpoint, loop
from metajax.training.checkpoint import (CHECKPOINT_NAME, load_checkpoint,
                                         save_checkpoint)
from metajax.training.loop import DeadlineReached, NonFiniteLossError, fit

__all__ = [
    "CHECKPOINT_NAME", "DeadlineReached", "NonFiniteLossError", "checkpoint",
    "fit",
    "load_checkpoint", "loop", "save_checkpoint",
]
