"""metajax: JAX-first meta-learning with exact second-order meta-gradients."""
# First, so its XLA:CPU flag is in place before any JAX backend starts.
from metajax import xla_cpu  # noqa: I001
from metajax import (cnp, data, evaluation, imaml, inner, learners, losses,
                     maml_plus_plus, masks, matching, metaoptnet, models,
                     protonet, r2d2, reptile, stats, task_map, train)
from metajax.cnp import CNP
from metajax.imaml import IMAML
from metajax.maml_plus_plus import MAMLPlusPlus
from metajax.matching import MatchingNet
from metajax.metaoptnet import MetaOptNet
from metajax.protonet import EmbeddingLearner, ProtoNet
from metajax.r2d2 import R2D2
from metajax.reptile import Reptile
from metajax.inner import adapt
from metajax.learner import Learner, MetaState, init_state, make_meta_step
from metajax.maml import MAML
from metajax.tasks import Task, check_tasks, check_ways

__version__ = "0.1.0"

__all__ = [
    "CNP", "EmbeddingLearner", "IMAML", "MAMLPlusPlus", "MatchingNet",
    "MetaOptNet", "ProtoNet", "R2D2", "Reptile", "cnp", "imaml", "learners",
    "maml_plus_plus", "matching", "metaoptnet", "protonet", "r2d2", "reptile",
    "MAML", "Learner", "MetaState", "Task", "adapt", "check_tasks",
    "check_ways", "data", "evaluation", "init_state", "inner", "losses",
    "make_meta_step", "masks", "models", "stats", "task_map", "train", "xla_cpu",
]
