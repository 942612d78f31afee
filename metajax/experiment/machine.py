"""A description of the machine a result was measured on (for result JSONs)."""
from __future__ import annotations

import os
import platform
import sys


def describe() -> dict:
  """CPU model, cores, memory, accelerators and library versions."""
  import jax
  info = {
      "platform": platform.platform(),
      "python": sys.version.split()[0],
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
      "devices": [str(d) for d in jax.devices()],
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          info["cpu"] = line.split(":", 1)[1].strip()
          break
    with open("/proc/meminfo") as f:
      kb = int(f.readline().split()[1])
      info["memory_gib"] = round(kb / 2**20, 1)
  except OSError:
    pass
  for mod in ("jaxlib", "flax", "optax"):
    try:
      info[mod] = __import__(mod).__version__
    except Exception:  # version metadata is informative only
      pass
  return info
