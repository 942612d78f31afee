"""What every experiment shares: the run folder, configs, metrics, run record.

:mod:`config` (dataclass configs, named variants, ``--set`` overrides),
:mod:`workdir` (the run folder that refuses to mix two configs),
:mod:`metrics_log` (JSON lines plus TensorBoard), :mod:`record` (versions,
devices, git commit), :mod:`runtime` (compilation cache, multi-host start)
and :mod:`cli` (the flags of every ``main.py``).
"""
from metajax.experiment import (cli, config, machine, metrics_log, record,
                                runtime, workdir)
from metajax.experiment.config import ConfigError
from metajax.experiment.metrics_log import MetricsLog
from metajax.experiment.record import run_info
from metajax.experiment.workdir import ConfigMismatchError, WorkdirError

__all__ = [
    "ConfigError", "ConfigMismatchError", "MetricsLog", "WorkdirError", "cli",
    "config", "machine", "metrics_log", "record", "run_info", "runtime",
    "workdir",
]
