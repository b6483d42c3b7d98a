"""The errors of every checkpoint reader (PyTorch pickles, safetensors, orbax folders)."""

from __future__ import annotations

import pickle


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The pickle references a global outside the allow-list (refused, nothing was run)."""


class CheckpointFormatError(ValueError):
  """The file or folder is not a readable checkpoint (PyTorch, safetensors or orbax)."""


# What reading a file that is not a valid checkpoint can raise (torch_pickle, safetensors,
# orbax); the command-line tools report these as one line, never a traceback.
CHECKPOINT_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, EOFError,
                     AttributeError, pickle.UnpicklingError)
