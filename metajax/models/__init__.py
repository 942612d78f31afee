"""Model zoo: flax modules used functionally through ``apply``."""
from metajax.models.context import WithContext
from metajax.models.conv4 import Conv4
from metajax.models.layers import Conv, NormReluMaxPool, TransductiveBatchNorm
from metajax.models.mlp import MLP

__all__ = ["Conv4", "Conv", "MLP", "NormReluMaxPool", "TransductiveBatchNorm",
           "WithContext"]
