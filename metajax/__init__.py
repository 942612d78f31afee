"""metajax: JAX-first meta-learning with exact second-order meta-gradients.

Packages (see the README's "Architecture"): :mod:`metajax.core` (tasks, the
learner contract and meta-step, task mapping, the inner loop),
:mod:`metajax.algorithms` (the learners and their registry),
:mod:`metajax.configs` (the papers' hyperparameters),
:mod:`metajax.training` (``fit``, checkpoints), :mod:`metajax.evaluation`
(the test harness, Lake's benchmark), :mod:`metajax.data`,
:mod:`metajax.models` and :mod:`metajax.experiment` (the run folder and
config layer every experiment shares).
"""
# First, so its XLA:CPU flag is in place before any JAX backend starts.
from metajax import xla_cpu  # noqa: I001
from metajax import (algorithms, configs, core, data, evaluation, experiment,
                     models, training)
from metajax.algorithms import (CAVIA, CNP, IMAML, MAML, EmbeddingLearner,
                                LSTMMetaLearner, MAMLPlusPlus, MatchingNet,
                                MetaBaseline, MetaOptNet, NeuralProcess,
                                ProtoNet, R2D2, Reptile, SNAIL,
                                TransferLearner)
from metajax.algorithms.registry import make
from metajax.core import (Learner, MetaState, Task, adapt, check_tasks,
                          check_ways, init_state, make_meta_step, task_slice)
from metajax.evaluation import evaluate
from metajax.training import fit

__version__ = "0.1.0"

__all__ = [
    "CAVIA", "CNP", "EmbeddingLearner", "IMAML", "LSTMMetaLearner", "Learner",
    "MAML", "MAMLPlusPlus", "MatchingNet", "MetaBaseline", "MetaOptNet",
    "MetaState", "NeuralProcess", "ProtoNet", "R2D2", "Reptile", "SNAIL",
    "Task", "TransferLearner", "adapt", "algorithms", "check_tasks",
    "check_ways", "configs", "core", "data", "evaluate", "evaluation",
    "experiment", "fit", "init_state", "make", "make_meta_step", "models",
    "task_slice", "training", "xla_cpu",
]
