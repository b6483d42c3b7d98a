"""XLA options that only ``XLA_FLAGS`` can set, for the scripts (train.py, eval.py, restore).

LLVM loop unrolling off on XLA:CPU (``xla_cpu_disable_loop_unrolling``, one of XLA's backend
extra options: a map that ``jax.jit``'s ``compiler_options`` cannot set). The step's hot
kernels are library matmuls (YNNPACK, Eigen); XLA's own loops over them ran as fast without
unrolling, and compiling got 7-20 % shorter. Measured with ``bench/train_step.py``, each
variant in its own process, alternated (docs/training_cost.md, fifteenth sitting): compile
paper 1 s 54.9 / 51.8 -> 49.8 / 49.6 s, 64/2 3 s 48.6 / 47.1 -> 42.7 / 42.4 s, demo 48.0 / 55.4
-> 37.7 / 42.0 s; the steps within the machine's noise. A value may differ in its last bits
from a compile without it (XLA's reductions are summed in another order); the tests run with
it (tests/conftest.py), the parity tests included, with unchanged tolerances. XLA's other
size options (no SLP vectorizer, optimise for size) cut more compile time but made the steps
10-60 % slower: not used. Other backends ignore the option.
"""

from __future__ import annotations

import os

FLAG = "--xla_backend_extra_options"
CPU_EXTRA_OPTIONS = ("xla_cpu_disable_loop_unrolling",)


def with_compile_options(xla_flags: str) -> str:
  """``xla_flags`` (an ``XLA_FLAGS`` value) with :data:`CPU_EXTRA_OPTIONS` added.

  Unchanged where it already sets ``--xla_backend_extra_options`` (the user's choice, either
  way: ``--xla_backend_extra_options=`` opts out). Other flags are kept.
  """
  if any(f.split("=", 1)[0] == FLAG for f in xla_flags.split()):
    return xla_flags
  return " ".join(filter(None, (xla_flags, f"{FLAG}={','.join(CPU_EXTRA_OPTIONS)}")))


def use_compile_options() -> None:
  """Sets :func:`with_compile_options` of this process's ``XLA_FLAGS``.

  Call from a script before its first JAX computation: XLA reads ``XLA_FLAGS`` once, when
  the backend starts (afterwards this changes nothing). Never from library code.
  """
  os.environ["XLA_FLAGS"] = with_compile_options(os.environ.get("XLA_FLAGS", ""))
