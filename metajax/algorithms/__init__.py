"""The meta-learners, one module per method, and the registry by name.

* gradient-based: :mod:`~metajax.algorithms.maml` (MAML, FOMAML, ANIL,
  BOIL, Meta-SGD), :mod:`~metajax.algorithms.cavia`,
  :mod:`~metajax.algorithms.lstm_meta` (a learned update rule),
  :mod:`~metajax.algorithms.maml_plus_plus`,
  :mod:`~metajax.algorithms.reptile`, :mod:`~metajax.algorithms.imaml`;
* metric: :mod:`~metajax.algorithms.embedding` (the backbone-plus-head
  base), :mod:`~metajax.algorithms.protonet`,
  :mod:`~metajax.algorithms.matching`, :mod:`~metajax.algorithms.snail`;
* closed-form heads: :mod:`~metajax.algorithms.r2d2`,
  :mod:`~metajax.algorithms.metaoptnet`;
* generative: :mod:`~metajax.algorithms.cnp`,
  :mod:`~metajax.algorithms.neural_process` (latent NP, ANP);
* transfer baselines (pretraining, then a head on frozen features):
  :mod:`~metajax.algorithms.transfer` (Baseline, Baseline++, RFS-simple,
  SimpleShot, Meta-Baseline) and its heads,
  :mod:`~metajax.algorithms.transfer_heads`;
* :mod:`~metajax.algorithms.registry`: ``make(name, model, setting=...)``.
"""
from metajax.algorithms import (cavia, cnp, embedding, imaml, lstm_meta,
                                maml, maml_plus_plus, matching, metaoptnet,
                                neural_process, protonet, r2d2, registry,
                                reptile, snail, transfer, transfer_heads)
from metajax.algorithms.cavia import CAVIA
from metajax.algorithms.cnp import CNP
from metajax.algorithms.embedding import EmbeddingLearner
from metajax.algorithms.imaml import IMAML
from metajax.algorithms.lstm_meta import LSTMMetaLearner
from metajax.algorithms.maml import MAML
from metajax.algorithms.maml_plus_plus import MAMLPlusPlus
from metajax.algorithms.matching import MatchingNet
from metajax.algorithms.metaoptnet import MetaOptNet
from metajax.algorithms.neural_process import NeuralProcess
from metajax.algorithms.protonet import ProtoNet
from metajax.algorithms.r2d2 import R2D2
from metajax.algorithms.registry import get, make, names, register
from metajax.algorithms.reptile import Reptile
from metajax.algorithms.snail import SNAIL
from metajax.algorithms.transfer import MetaBaseline, TransferLearner

__all__ = [
    "CAVIA", "CNP", "EmbeddingLearner", "IMAML", "LSTMMetaLearner", "MAML",
    "MAMLPlusPlus", "MatchingNet", "MetaBaseline", "MetaOptNet",
    "NeuralProcess", "ProtoNet", "R2D2", "Reptile", "SNAIL", "TransferLearner",
    "cavia", "cnp", "embedding", "get", "imaml", "lstm_meta", "make", "maml",
    "maml_plus_plus", "matching", "metaoptnet", "names", "neural_process",
    "protonet", "r2d2", "register", "registry", "reptile", "snail", "transfer",
    "transfer_heads",
]
