"""metajax: JAX-first meta-learning with exact second-order meta-gradients."""
from metajax import data, evaluation, inner, losses, masks, models, stats, task_map, train
from metajax.inner import adapt
from metajax.learner import Learner, MetaState, init_state, make_meta_step
from metajax.maml import MAML
from metajax.tasks import Task, check_tasks, check_ways

__version__ = "0.1.0"

__all__ = [
    "MAML", "Learner", "MetaState", "Task", "adapt", "check_tasks",
    "check_ways", "data", "evaluation", "init_state", "inner", "losses",
    "make_meta_step", "masks", "models", "stats", "task_map", "train",
]
