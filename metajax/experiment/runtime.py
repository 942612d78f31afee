"""Process-wide JAX settings an experiment chooses before it compiles.

* :func:`enable_compile_cache`: JAX's persistent compilation cache, so a
  second run of the same experiment (a resume, the next seed, the test pass
  after training) loads its compiled meta-step from disk instead of
  compiling it again. On with ``--compile-cache DIR`` or the environment
  variable :data:`CACHE_ENV`; off otherwise (and in the tests, unless a test
  is about it).
* :func:`initialize_distributed`: ``jax.distributed.initialize()`` for runs
  over several hosts (``--distributed``), before any device is touched.

References:
  The JAX authors, "Persistent compilation cache" and "Multi-process
  environments", https://docs.jax.dev/.
"""
from __future__ import annotations

import os
import pathlib

#: environment variable naming the compilation cache folder.
CACHE_ENV = "METAJAX_COMPILE_CACHE"


def compile_cache_dir(flag: str | os.PathLike | None) -> pathlib.Path | None:
  """The cache folder: ``flag`` if given, else ``$METAJAX_COMPILE_CACHE``,
  else ``None`` (no cache). An empty string means no cache."""
  value = os.fspath(flag) if flag is not None else os.environ.get(CACHE_ENV)
  if not value:
    return None
  return pathlib.Path(value).expanduser()


def enable_compile_cache(directory: str | os.PathLike) -> pathlib.Path:
  """Turns on JAX's persistent compilation cache in ``directory``.

  Every compilation is cached, however short (the default skips those under
  a second, which is most of a small experiment's start-up). Entries are
  keyed by the program, the jax/jaxlib versions, the backend and the XLA
  flags, so a cache shared between machines or versions never returns
  another's executable.

  Raises:
    ValueError: if ``directory`` exists and is not a folder, or cannot be
      created.
  """
  import jax
  path = pathlib.Path(directory).expanduser()
  if path.exists() and not path.is_dir():
    raise ValueError(f"compile cache {path} exists and is not a folder")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create the compile cache folder {path}: {e}"
                     ) from e
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def initialize_distributed() -> dict:
  """``jax.distributed.initialize()`` from the environment; returns this
  process's index and the process count.

  SLURM, Open MPI, TPU pods and Kubernetes are detected by JAX itself.
  Elsewhere set ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` in every process.

  Raises:
    ValueError: if ``JAX_NUM_PROCESSES`` or ``JAX_PROCESS_ID`` is not an
      integer.
  """
  import jax
  kwargs = {}
  for env, key in (("JAX_NUM_PROCESSES", "num_processes"),
                   ("JAX_PROCESS_ID", "process_id")):
    value = os.environ.get(env)
    if value:
      try:
        kwargs[key] = int(value)
      except ValueError:
        raise ValueError(f"{env} must be an integer, got {value!r}") from None
  jax.distributed.initialize(**kwargs)
  return {"process_index": jax.process_index(),
          "process_count": jax.process_count()}
