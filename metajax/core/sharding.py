"""Tasks sharded across devices: one program, the meta-gradient reduced.

A meta-step's task batch splits evenly over a one-axis device mesh (axis
:data:`AXIS`). Each device maps its own tasks exactly as on one device
(``vmap``, chunked ``lax.map`` or a traced loop, see
:mod:`metajax.core.task_map`), takes their mean, and ``lax.pmean`` averages
the per-device means: the mean over all tasks, since every device holds the
same number of tasks. Parameters, optimiser state and running statistics are
replicated; the optimiser update runs on every device on the same reduced
gradient, so they stay identical without further communication.

Numerically the result equals the single-device meta-step up to the order of
the floating-point sum over tasks (one partial sum per device, then a sum
over devices instead of one sum over all tasks) and to how XLA compiles a
device's smaller batch. Tested in float64 against the one-device step on 8
host devices (``tests/core/test_sharding.py``): within 1e-13 relative for
conv-4 MAML, ProtoNets with running statistics, Reptile with persistent
inner state and MAML++'s schedule. It is not bit-identical in general: even
two tasks on two devices, where both orders add the same two numbers, come
out equal on some data and a few ulps apart on other data after a few
steps, since XLA fuses the one-task program differently.

The same code runs on several hosts: after ``jax.distributed.initialize()``
in every process, ``devices='all'`` builds the mesh over ``jax.devices()``,
the global device list, and each process runs the same program on the same
sampled task batch (the sampler is seeded by the step), keeping its own
devices' shard. See the README's "Scale" section for the worked commands.

References:
  The JAX authors, "Distributed arrays and automatic parallelization" and
  "Manual parallelism with shard_map", https://docs.jax.dev/.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: the name of the mesh axis tasks are split over.
AXIS = "tasks"

Devices = Any  # None | int | "all" | a sequence of jax.Device


def resolve_devices(devices: Devices) -> tuple | None:
  """The devices a ``devices=`` option names, or ``None`` for one device.

  Args:
    devices: ``None`` or ``1`` (no sharding: the default device), an integer
      ``n`` (the first ``n`` of ``jax.devices()``), ``'all'`` (every device
      of every process) or a sequence of ``jax.Device``.

  Raises:
    ValueError: naming the problem (more devices than exist, a bad value).
  """
  if devices is None:
    return None
  available = jax.devices()
  if isinstance(devices, str):
    if devices != "all":
      raise ValueError(f"devices must be None, a positive integer, 'all' or "
                       f"a sequence of jax devices, got {devices!r}")
    chosen = tuple(available)
  elif isinstance(devices, bool):
    raise ValueError(f"devices must be None, a positive integer, 'all' or a "
                     f"sequence of jax devices, got {devices!r}")
  elif isinstance(devices, int):
    if devices < 1:
      raise ValueError(f"devices must be at least 1, got {devices}")
    if devices > len(available):
      raise ValueError(
          f"devices={devices} but only {len(available)} "
          f"{available[0].platform} device(s) exist; on CPU, more host "
          "devices need XLA_FLAGS=--xla_force_host_platform_device_count=N "
          "set before jax starts")
    chosen = tuple(available[:devices])
  else:
    chosen = tuple(devices)
    if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
      raise ValueError(f"devices must be None, a positive integer, 'all' or "
                       f"a non-empty sequence of jax devices, got {devices!r}")
    if len(set(chosen)) != len(chosen):
      raise ValueError(f"devices lists a device twice: {devices!r}")
  # One device named by count is the default device: no mesh. A device
  # passed explicitly keeps its one-device mesh, which places the step there.
  if len(chosen) == 1 and not isinstance(devices, (list, tuple)):
    return None
  return chosen


def task_mesh(devices: Devices) -> Mesh | None:
  """A one-axis mesh (axis :data:`AXIS`) over ``devices``, or ``None``
  where ``devices`` names no more than the default device."""
  chosen = resolve_devices(devices)
  if chosen is None:
    return None
  return Mesh(chosen, (AXIS,))


def check_divisible(num_tasks: int, mesh: Mesh | None) -> None:
  """``ValueError`` unless ``num_tasks`` splits evenly over ``mesh``."""
  if mesh is None:
    return
  n = mesh.size
  if num_tasks % n:
    raise ValueError(
        f"a meta-batch of {num_tasks} tasks does not split evenly over "
        f"{n} devices; use a meta-batch that is a multiple of {n} (every "
        "device must hold the same number of tasks for the mean to be exact)")


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of a value every device holds in full."""
  return NamedSharding(mesh, PartitionSpec())


def mean_over_devices(fn: Callable[..., Any], mesh: Mesh,
                      num_replicated: int) -> Callable[..., Any]:
  """``fn`` run per device on its shard of the last argument (a task batch),
  outputs averaged over devices.

  Args:
    fn: ``fn(*replicated_args, tasks)`` returning a pytree that is a mean
      over ``tasks`` (as ``Learner.meta_grad`` does).
    mesh: from :func:`task_mesh`.
    num_replicated: how many leading arguments every device gets in full.
  """
  rep, split = PartitionSpec(), PartitionSpec(AXIS)

  def local(*args):
    return jax.lax.pmean(fn(*args), AXIS)

  # check_vma=False: the models' custom derivative rules (metajax.models.ops)
  # return cotangents of replicated weights computed from per-device data,
  # which the varying-axis type check rejects; the pmean above is what makes
  # every output replicated.
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(rep,) * num_replicated + (split,),
                       out_specs=rep, check_vma=False)


def describe(devices: Devices) -> dict:
  """What a run folder records about ``devices``: count, kind, processes."""
  chosen = resolve_devices(devices)
  used = list(chosen) if chosen is not None else [jax.devices()[0]]
  return {"devices": len(used),
          "device_kind": used[0].device_kind,
          "platform": used[0].platform,
          "processes": len({d.process_index for d in used})}
