"""Trains Apollo. Relaunching the same command resumes from the last checkpoint.

  python train.py --config configs/apollo.py:demo --workdir runs/demo
  python train.py --config configs/apollo.py --workdir runs/paper \
      --config.data.layout=musdb --config.data.train_dirs="('/data/musdb18hq',)"

Multi-host: start one process per host with the same flags plus
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (or rely on the
cluster's environment, e.g. SLURM / TPU pods, where ``jax.distributed.initialize()`` finds
them itself with ``--distributed``).

Compiled programs are cached in WORKDIR/compile_cache (``APOLLO_JAX_COMPILE_CACHE``: another
folder, or ``off``), so a relaunch does not compile again.
"""

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file (configs/apollo.py[:variant]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs and metrics.")
flags.DEFINE_string("coordinator_address", None, "Multi-process: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: index of this process.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with the cluster's "
                  "environment (SLURM, TPU pods, ...).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from apollo_jax import xla_options
  xla_options.use_compile_options()  # before JAX starts its backend: shorter CPU compiles
  import jax
  if flags.FLAGS.coordinator_address or flags.FLAGS.distributed:
    jax.distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                               flags.FLAGS.process_id)
  # orbax logs every file it writes at INFO; keep the console for progress and warnings.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("apollo_jax").setLevel(logging.INFO)
  from apollo_jax import compile_cache
  from apollo_jax.data import DataError
  from apollo_jax.training.checkpoint import ResumeError
  # In the run's folder: a relaunch or resume loads the compiled step instead of compiling.
  compile_cache.setup(os.path.join(flags.FLAGS.workdir, "compile_cache"))
  from apollo_jax.training.loop import train
  from apollo_jax.training.validate import ConfigError
  try:
    summary = train(flags.FLAGS.config, flags.FLAGS.workdir)
  except (ConfigError, ResumeError, DataError) as e:  # the user's to fix: one line, no traceback
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
    sys.exit(2)
  if jax.process_index() == 0:
    print("done:", summary, flush=True)


if __name__ == "__main__":
  from apollo_jax.data import heap
  heap.restart_with_huge_pages()  # XLA's per-step buffers on 2 MiB pages (see heap.py)
  app.run(main)
