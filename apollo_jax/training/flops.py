"""How many matmul FLOPs a jitted function does, and the peaks of known accelerators.

XLA's cost analysis (``compiled.cost_analysis()["flops"]``) counts each while loop's body
once, whatever its trip count, and the training step runs the position-wise layers in
``lax.map`` row chunks on CPU (``layers.map_rows``): there it reports a fraction of the work.
:func:`matmul_flops` counts the dots and convolutions of the function's jaxpr instead,
multiplying the body of every ``scan`` (``lax.map`` is one) by its length. Elementwise work
is not counted, as in the usual model-FLOPs utilisation.
"""

from __future__ import annotations

import math

import jax
from jax import lax
from jax.extend.core import Var, jaxprs_in_params

# Dense bf16 matmul peaks in TFLOP/s from the vendors' data sheets (no sparsity), matched
# against ``jax.Device.device_kind``; the first matching entry wins.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),   # SXM5
    ("H200", 989.0),
    ("A100", 312.0),
    ("TPU v4", 275.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0),
    ("TPU v5p", 459.0),
    ("TPU v5", 459.0),
    ("TPU v6 lite", 918.0),
)


def bf16_peak_tflops(device_kind: str) -> float | None:
  """The dense bf16 peak of a device kind (``jax.devices()[0].device_kind``), or None."""
  for name, tflops in BF16_PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return tflops
  return None


def _dot_flops(eqn) -> int:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  return 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn) -> int:
  # Every output element is a dot over the kernel's window and its input features per group.
  dn = eqn.params["dimension_numbers"]
  kernel = eqn.invars[1].aval.shape
  in_features = kernel[dn.rhs_spec[1]]
  window = math.prod(kernel[d] for d in dn.rhs_spec[2:])
  return 2 * math.prod(eqn.outvars[0].aval.shape) * in_features * window


def _live_eqns(jaxpr) -> list:
  """The equations whose results are used (XLA drops the others: e.g. the primal outputs
  that ``jax.vjp`` traces inside a hand-written backward)."""
  used = {v for v in jaxpr.outvars if isinstance(v, Var)}
  live = []
  for eqn in reversed(jaxpr.eqns):
    if eqn.effects or any(v in used for v in eqn.outvars):
      live.append(eqn)
      used.update(v for v in eqn.invars if isinstance(v, Var))
  return live[::-1]


def _count(jaxpr) -> tuple[int, int]:
  """(FLOPs, while loops counted once) of one run of ``jaxpr``."""
  flops = loops = 0
  for eqn in _live_eqns(jaxpr):
    name = eqn.primitive.name
    if eqn.primitive is lax.dot_general_p:
      flops += _dot_flops(eqn)
    elif eqn.primitive is lax.conv_general_dilated_p:
      flops += _conv_flops(eqn)
    elif name == "scan":
      body, body_loops = _count(eqn.params["jaxpr"].jaxpr)
      flops, loops = flops + eqn.params["length"] * body, loops + body_loops
    elif name == "cond":  # the costliest branch
      branch_flops, branch_loops = max(_count(b.jaxpr) for b in eqn.params["branches"])
      flops, loops = flops + branch_flops, loops + branch_loops
    else:  # calls, custom derivatives, remat, while (trip count unknown: its body once)
      loops += name == "while"
      for sub in jaxprs_in_params(eqn.params):
        sub_flops, sub_loops = _count(sub)
        flops, loops = flops + sub_flops, loops + sub_loops
  return flops, loops


def matmul_flops(jaxpr) -> tuple[int, int]:
  """(dot and convolution FLOPs of one run of ``jaxpr``, number of while loops whose body was
  counted once). ``jaxpr``: ``jax.make_jaxpr(fn)(*args)``, or ``jitted.trace(*args).jaxpr``
  for a jitted function (the train step: its tracing is then shared with its compile).
  Differentiation inside is counted as traced (backward passes, recomputation)."""
  return _count(getattr(jaxpr, "jaxpr", jaxpr))
