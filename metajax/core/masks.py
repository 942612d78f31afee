"""Parameter masks: which leaves of a parameter pytree take part in a step.

A mask is a pytree of Python bools shaped like the parameters (as in
``optax.masked``). :func:`from_predicate` builds one from a predicate on
each leaf's path, written ``'a/b/c'`` (e.g. ``'head/kernel'``), so
``lambda path: path.startswith('head')`` adapts only the head (ANIL).
"""
from __future__ import annotations

from typing import Any, Callable

import jax


def path_str(path) -> str:
  """``'a/b/c'`` for a ``jax.tree_util`` key path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def from_predicate(params: Any, predicate: Callable[[str], bool]) -> Any:
  """A bool pytree: ``predicate(path)`` for every leaf of ``params``."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: bool(predicate(path_str(p))), params)


def is_norm(path: str) -> bool:
  """Whether a parameter path belongs to a normalisation layer (a path
  segment named ``norm...``, as :class:`metajax.models.Conv4`'s
  ``norm0``..``norm3`` and :class:`metajax.models.layers.BatchNorm`)."""
  return any(part.startswith("norm") or part.startswith("BatchNorm")
             for part in path.split("/"))


def exclude_norm(path: str) -> bool:
  """Adapt-mask predicate: every parameter except normalisation layers'.

  cbfinn/maml keeps batch norm's variables out of the fast weights (they
  are meta-learned but not adapted in the inner loop); pass this as
  ``adapt_mask`` for that behaviour.
  """
  return not is_norm(path)


def resolve(mask: Any, params: Any) -> list[bool]:
  """The mask as a flat list of bools aligned with ``params``' leaves.

  ``mask`` is ``None`` (everything), a predicate on path strings, or a bool
  pytree with the structure of ``params``.
  """
  n = len(jax.tree_util.tree_leaves(params))
  if mask is None:
    return [True] * n
  if callable(mask):
    mask = from_predicate(params, mask)
  leaves, mdef = jax.tree_util.tree_flatten(mask)
  pdef = jax.tree_util.tree_structure(params)
  if mdef != pdef:
    raise ValueError(
        f"mask structure {mdef} does not match the parameters {pdef}")
  out = [bool(m) for m in leaves]
  if not any(out):
    raise ValueError("the mask selects no parameter to adapt")
  return out
