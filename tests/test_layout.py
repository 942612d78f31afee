"""The package layout's claims (README "Architecture"), checked on the source.

These are conventions no unit test would notice breaking: generic code that
starts dispatching on learner classes, a public ``__all__`` that drifts, a
test file filed away from the package it tests.
"""
from __future__ import annotations

import ast
from pathlib import Path

import metajax

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "metajax"
TESTS = ROOT / "tests"

#: the learners; generic code must go through the Learner contract instead.
LEARNERS = frozenset({"MAML", "MAMLPlusPlus", "Reptile", "IMAML", "ProtoNet",
                      "MatchingNet", "R2D2", "MetaOptNet", "CNP",
                      "EmbeddingLearner", "TransferLearner", "MetaBaseline",
                      "CAVIA", "LSTMMetaLearner", "NeuralProcess", "SNAIL"})
#: the learner-agnostic packages (the meta-step, inner loop, training loop).
GENERIC = ("core", "training")
#: test folders that mirror no package: entry points, benchmark scripts and
#: documentation.
EXTRA_TEST_FOLDERS = frozenset({"experiments", "benchmarks", "docs"})
TOP_LEVEL_TESTS = frozenset({"test_xla_cpu.py", "test_layout.py"})


def _class_names(node: ast.expr) -> set[str]:
  """Names in an ``isinstance`` class argument: ``A``, ``m.A``, ``(A, B)``."""
  if isinstance(node, ast.Name):
    return {node.id}
  if isinstance(node, ast.Attribute):
    return {node.attr}
  if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
    return set().union(*(_class_names(e) for e in node.elts))
  if isinstance(node, ast.BinOp):  # A | B
    return _class_names(node.left) | _class_names(node.right)
  return set()


def test_learner_names_are_the_learners():
  # A renamed learner would otherwise silently drop out of the check below.
  from metajax.core import Learner
  for name in LEARNERS:
    cls = getattr(metajax.algorithms, name)
    assert isinstance(cls, type) and issubclass(cls, Learner), name


def test_generic_code_does_not_dispatch_on_learner_classes():
  """A learner's behaviour belongs in its methods, not in ``if isinstance``
  branches of the loop: such branches break every user-defined learner and
  every new algorithm the branch does not know."""
  hits = []
  for folder in GENERIC:
    for path in sorted((PACKAGE / folder).rglob("*.py")):
      tree = ast.parse(path.read_text(), filename=str(path))
      for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2):
          bad = _class_names(node.args[1]) & LEARNERS
          if bad:
            hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                        f"{node.func.id}(..., {sorted(bad)})")
  assert not hits, "learner-class dispatch in generic code:\n" + "\n".join(
      hits)


def test_public_names_are_sorted_and_resolve():
  names = metajax.__all__
  assert names == sorted(names), (
      "metajax.__all__ is not sorted; sorted it reads "
      f"{sorted(names)}")
  assert len(set(names)) == len(names), "metajax.__all__ repeats a name"
  missing = [n for n in names if not hasattr(metajax, n)]
  assert not missing, f"metajax.__all__ names undefined attributes {missing}"


def _packages() -> set[str]:
  return {p.name for p in PACKAGE.iterdir()
          if p.is_dir() and (p / "__init__.py").is_file()}


def test_test_files_live_in_a_folder_named_after_a_package():
  """``tests/<package>/test_*.py`` mirrors ``metajax/<package>/``, so the
  tests of a module are found without searching."""
  allowed = _packages() | EXTRA_TEST_FOLDERS
  misplaced = []
  files = set(TESTS.rglob("test_*.py")) | set(TESTS.rglob("*_test.py"))
  for path in sorted(files):
    rel = path.relative_to(TESTS)
    if len(rel.parts) == 1:
      ok = rel.name in TOP_LEVEL_TESTS
    else:
      ok = rel.parts[0] in allowed
    if not ok:
      misplaced.append(str(rel))
  assert not misplaced, (
      f"test files outside tests/<{'|'.join(sorted(allowed))}>/: {misplaced}")


def test_one_meta_step_and_one_training_loop():
  # No learner has a step or a training function of its own: the one
  # make_meta_step (core) and the one fit (training) serve every learner.
  defs = {"make_meta_step": [], "fit": []}
  for path in sorted(PACKAGE.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.FunctionDef) and node.name in defs:
        defs[node.name].append(path.relative_to(ROOT).as_posix())
  assert defs == {"make_meta_step": ["metajax/core/learner.py"],
                  "fit": ["metajax/training/loop.py"]}
