"""XLA:CPU settings for meta-learning workloads, applied when metajax is imported.

jaxlib 0.10's CPU backend hands convolutions, dots, reductions and some
elementwise fusions to its YNNPACK library ("YNN fusions"). For the 3x3
convolutions of conv-4 networks XLA's own convolution kernels are faster
(75 x 14 x 14 x 64 images, 64 filters, 2-core CPU: forward 11.9 -> 7.2 ms,
input gradient 12.0 -> 6.7 ms; ``benchmarks/results_conv_ops.json``), while
YNN's reductions and matrix products stay the fastest available. So
``import metajax`` adds

    --xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce

to ``XLA_FLAGS`` (its effect on whole meta-steps: ``benchmarks/README.md``).
It does so only when

* ``METAJAX_XLA_CPU_DEFAULTS`` is not ``0`` (the opt-out),
* ``XLA_FLAGS`` does not already choose YNN fusion types (yours win),
* JAX's default backend will be the CPU: ``JAX_PLATFORMS`` (if set) lists
  ``cpu`` first, or (if unset) no GPU or TPU plugin (``jax-cuda*-plugin``,
  ``jax-rocm*-plugin``, ``libtpu``) is installed, and
* no JAX backend has started yet: XLA reads its flags once, when the first
  backend starts, so import metajax before running any JAX computation.

The flag concerns the CPU backend only, so accelerator runs go without it. It
exists in the jaxlib that ``pyproject.toml`` pins (0.10.x); XLA aborts on
flags it does not know, so with any other jaxlib nothing is added.
"""
from __future__ import annotations

import os
from typing import MutableMapping

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
VALUE = "individual_dot,reduce"
OPT_OUT = "METAJAX_XLA_CPU_DEFAULTS"
#: jaxlib releases known to have the flag.
JAXLIB_SERIES = "0.10."
#: name prefixes of the distributions that give JAX a GPU or TPU backend.
ACCELERATOR_PLUGINS = ("jax-cuda", "jax-rocm", "libtpu")


def _backends_started() -> bool:
  from jax._src import xla_bridge
  return xla_bridge.backends_are_initialized()


def _jaxlib_version() -> str:
  from importlib import metadata
  try:
    return metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return ""


def _accelerator_plugins() -> list[str]:
  from importlib import metadata
  names = {(d.metadata["Name"] or "").lower().replace("_", "-")
           for d in metadata.distributions()}
  return sorted(n for n in names if n.startswith(ACCELERATOR_PLUGINS))


def default_platform(environ, plugins) -> str:
  """The platform JAX's default backend will run on, as far as the
  environment and the installed plugins tell before any backend starts:
  ``JAX_PLATFORMS``'s first entry if set, else ``'accelerator'`` when a
  GPU or TPU plugin is installed, else ``'cpu'``."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower()
  return "accelerator" if plugins else "cpu"


def apply_defaults(environ: MutableMapping[str, str] | None = None,
                   backends_started: bool | None = None,
                   jaxlib_version: str | None = None,
                   plugins: list[str] | None = None) -> str:
  """Adds metajax's XLA:CPU flag to ``XLA_FLAGS`` where that is safe and wanted.

  Args:
    environ: the environment to edit (default ``os.environ``).
    backends_started: whether a JAX backend already runs (default: ask JAX).
    jaxlib_version: the installed jaxlib (default: read its metadata).
    plugins: the installed GPU/TPU plugin distributions (default: those
      whose names start with :data:`ACCELERATOR_PLUGINS`).

  Returns:
    What happened: ``'applied'``; ``'opted out'`` (``METAJAX_XLA_CPU_DEFAULTS=0``);
    ``'user setting'`` (``XLA_FLAGS`` already names the flag); ``'other
    jaxlib'`` (not a release known to have the flag); ``'other backend'``
    (the default backend will not be the CPU); or ``'too late'`` (a
    backend had started, so the flag could no longer take effect).
  """
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, "1").strip() == "0":
    return "opted out"
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if not version.startswith(JAXLIB_SERIES):
    return "other jaxlib"
  flags = environ.get("XLA_FLAGS", "")
  if FLAG in flags:
    return "user setting"
  if default_platform(environ, _accelerator_plugins() if plugins is None
                      else plugins) != "cpu":
    return "other backend"
  if _backends_started() if backends_started is None else backends_started:
    return "too late"
  environ["XLA_FLAGS"] = f"{flags} {FLAG}={VALUE}".strip()
  return "applied"


#: ``XLA_FLAGS`` as it was before ``import metajax`` (``None``: unset), for
#: tools that start fresh processes with or without metajax's setting.
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS")
#: what ``import metajax`` did (see :func:`apply_defaults`).
STATUS = apply_defaults()
