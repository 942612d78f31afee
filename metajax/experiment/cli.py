"""The command line every experiment's ``main.py`` shares.

``main.py`` is one call::

  def main(argv=None):
    return cli.run(argv, configs_module=configs,
                   train_and_evaluate=train_and_evaluate,
                   default_workdir="runs/sinusoid",
                   description=__doc__)

and ``python -m experiments.sinusoid --config tiny --set seed=3`` then builds
the variant, applies the overrides, validates, prepares the workdir (refusing
one that holds a run of another config) and only then calls
``train_and_evaluate(config, workdir, data_dir=..., progress=...)``. Every
user error surfaces before any work starts, as one ``error:`` line and exit
status 2, the way argparse reports a bad flag.

Three shared flags are about the machine rather than the experiment, so they
are not part of the config (a run can resume on another device count):
``--devices N|all`` is handed to ``train_and_evaluate`` as ``devices=`` and
shards each meta-batch (:mod:`metajax.core.sharding`; the run record notes
it); ``--distributed`` calls ``jax.distributed.initialize()`` first;
``--compile-cache DIR`` (or ``$METAJAX_COMPILE_CACHE``) turns on JAX's
persistent compilation cache (:mod:`metajax.experiment.runtime`).
"""
from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any, Callable, Sequence

from metajax.core import sharding as sharding_lib
from metajax.experiment import config as config_lib
from metajax.experiment import runtime
from metajax.experiment import workdir as workdir_lib


def make_parser(configs_module, *, default_workdir: str, description: str,
                prog: str | None = None) -> argparse.ArgumentParser:
  """The parser of the shared flags (without an experiment's extra flags)."""
  variants = getattr(configs_module, "VARIANTS", {})
  parser = argparse.ArgumentParser(
      prog=prog, description=description, allow_abbrev=False,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
      "--config", default="default", metavar="NAME",
      help=f"named config variant: {', '.join(variants)} (default: default)")
  parser.add_argument(
      "--set", action="append", default=[], metavar="KEY=VALUE", dest="set",
      help="override one config field, dotted for nested configs (e.g. "
      "--set seed=3 --set learner.meta_lr=5e-4); repeatable")
  parser.add_argument(
      "--workdir", default=default_workdir, metavar="DIR",
      help="run folder: config, checkpoints, metrics, results; rerunning "
      "with the same config resumes (default: %(default)s)")
  parser.add_argument(
      "--fresh", action="store_true",
      help="delete the previous run in --workdir and start over")
  parser.add_argument(
      "--extend", action="store_true",
      help="continue the run in --workdir with a larger budget (--set "
      "iterations=N above its own); refused where the experiment's schedules "
      "depend on the budget")
  parser.add_argument(
      "--data-dir", default=None, metavar="DIR",
      help="where the data sets are (default: the experiment's own default)")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bars")
  parser.add_argument(
      "--print-config", action="store_true",
      help="print the resolved config as JSON and exit without running")
  parser.add_argument(
      "--devices", default=None, type=_devices_flag, metavar="N|all",
      help="shard each meta-batch over N devices (or all of them) in one "
      "program; results equal one device's to float tolerance. On CPU, more "
      "host devices need XLA_FLAGS=--xla_force_host_platform_device_count=N "
      "(default: one device)")
  parser.add_argument(
      "--distributed", action="store_true",
      help="call jax.distributed.initialize() first, for one run over "
      "several processes or hosts (with --devices all); see the README")
  parser.add_argument(
      "--compile-cache", default=None, metavar="DIR",
      help="JAX's persistent compilation cache folder, so a rerun loads its "
      f"compiled steps (default: ${runtime.CACHE_ENV}, else no cache)")
  return parser


def _devices_flag(value: str):
  if value == "all":
    return value
  try:
    n = int(value)
  except ValueError:
    n = 0
  if n < 1:
    raise argparse.ArgumentTypeError(
        f"expected a positive integer or 'all', got {value!r}")
  return n


#: the shared flags handed to ``train_and_evaluate`` (the rest are used here).
PASSED_FLAGS = ("devices",)


def run(argv: Sequence[str] | None, *, configs_module,
        train_and_evaluate: Callable[..., Any], default_workdir: str,
        description: str,
        extra_flags: Callable[[argparse.ArgumentParser], None] | None = None,
        raise_errors: bool = False, prog: str | None = None) -> Any:
  """Parses ``argv``, prepares the run and calls ``train_and_evaluate``.

  Args:
    argv: the arguments (without the program name); ``None`` reads
      ``sys.argv``.
    configs_module: a module with ``VARIANTS: dict[str, () -> Config]``.
    train_and_evaluate: called as ``train_and_evaluate(config, workdir,
      data_dir=..., progress=..., **extras)`` with the final config, the
      prepared workdir (a path), ``--data-dir`` as a path or ``None``, and
      the values of the flags ``extra_flags`` added, by their ``dest``.
    default_workdir: ``--workdir`` when not given.
    description: the ``--help`` text.
    extra_flags: adds experiment-specific flags to the parser.
    raise_errors: raise :class:`~metajax.experiment.config.ConfigError` and
      :class:`~metajax.experiment.workdir.WorkdirError` instead of exiting
      (for tests and programmatic use).
    prog: the program name shown in usage and errors.

  Returns:
    What ``train_and_evaluate`` returns, or ``None`` with ``--print-config``.

  Raises:
    SystemExit: status 2 for a bad flag, config key, value, variant or a
      workdir that holds a run of another config (unless ``raise_errors``).
  """
  parser = make_parser(configs_module, default_workdir=default_workdir,
                       description=description, prog=prog)
  shared = set(vars(parser.parse_args([]))) - set(PASSED_FLAGS)
  if extra_flags is not None:
    extra_flags(parser)
  args = parser.parse_args(argv)
  extra = {k: v for k, v in vars(args).items() if k not in shared}
  if args.devices is None:
    del extra["devices"]  # experiments without the option still run

  def fail(error: Exception):
    if raise_errors:
      raise error
    parser.error(str(error))

  try:
    cfg = config_lib.load_variant(configs_module, args.config)
    cfg = config_lib.override(cfg, args.set)
    config_lib.validate(cfg)
  except config_lib.ConfigError as e:
    return fail(e)
  config_dict = config_lib.to_dict(cfg)
  if args.print_config:
    print(json.dumps(config_dict, indent=2, sort_keys=True))
    return None
  # Before the run folder is touched: a bad device count leaves no trace.
  try:
    if args.distributed:
      runtime.initialize_distributed()
    cache = runtime.compile_cache_dir(args.compile_cache)
    if cache is not None:
      runtime.enable_compile_cache(cache)
    if args.devices is not None:
      sharding_lib.check_divisible(_meta_batch(cfg), sharding_lib.task_mesh(
          args.devices))
  except ValueError as e:
    return fail(config_lib.ConfigError(str(e)))
  extend = ()
  if args.extend:
    budget_dependent = getattr(configs_module, "budget_dependent", None)
    reasons = (["this experiment does not support --extend"]
               if budget_dependent is None else budget_dependent(cfg))
    if reasons:
      return fail(config_lib.ConfigError(
          "--extend would not continue the run as if it had been given the "
          "larger budget from the start: " + "; ".join(reasons)))
    extend = ("iterations",)
  try:
    workdir = workdir_lib.prepare(
        args.workdir, config_dict, fresh=args.fresh, extend=extend,
        defaults=config_lib.to_dict(type(cfg)()))
  except workdir_lib.WorkdirError as e:
    return fail(e)
  data_dir = None if args.data_dir is None else pathlib.Path(args.data_dir)
  return train_and_evaluate(cfg, workdir, data_dir=data_dir,
                            progress=not args.no_progress,
                            **extra)


def _meta_batch(cfg) -> int:
  """The config's tasks per meta-step (``meta_batch``, top level or in a
  nested learner config); 0 when it has none (nothing to check)."""
  for holder in (cfg, getattr(cfg, "learner", None)):
    value = getattr(holder, "meta_batch", None)
    if isinstance(value, int):
      return value
  return 0
