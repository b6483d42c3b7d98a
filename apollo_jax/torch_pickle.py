"""Reads PyTorch checkpoint files without torch and without running code from them.

A PyTorch ``.pt/.pth/.bin/.ckpt`` file is a zip archive holding ``<root>/data.pkl`` (a
pickle) and one raw little-endian buffer per tensor storage (``<root>/data/<key>``). The
pickle rebuilds tensors by calling ``torch._utils._rebuild_tensor_v2`` on storages it
names by persistent id. A plain ``pickle.load`` would import and call whatever the file
names, so a malicious checkpoint could run arbitrary code. Here the unpickler resolves
only an allow-list of globals (tensor rebuilders, storage types, plain containers) to our
own numpy implementations; any other global is refused with :class:`UnsafeCheckpointError`
naming it, before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The pickle references a global outside the allow-list."""


class CheckpointFormatError(ValueError):
  """The file is not a readable PyTorch / safetensors checkpoint."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32,
    "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


class _StorageType:
  """Stand-in for ``torch.FloatStorage`` and friends: only carries the dtype."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


class _TorchDtype(_StorageType):
  """Stand-in for ``torch.float32`` etc. as found in newer pickles."""


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  itemsize = storage.dtype.itemsize
  if not size:
    return np.array(storage[storage_offset], copy=True)
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=tuple(size), strides=[s * itemsize for s in stride])
  return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  del requires_grad, backward_hooks, state
  return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}
_ALLOWED.update({("torch", name): _StorageType(dt) for name, dt in _STORAGE_DTYPES.items()})
_ALLOWED.update({("torch", name): _TorchDtype(dt) for name, dt in _TORCH_DTYPES.items()})


class _SafeUnpickler(pickle.Unpickler):

  def __init__(self, data: bytes, read_storage):
    super().__init__(io.BytesIO(data))
    self._read_storage = read_storage

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f"refusing to load global '{module}.{name}' from the checkpoint: only tensors and "
          f"plain containers are allowed (nothing from the file was executed)") from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise UnsafeCheckpointError(f"unsupported persistent id in checkpoint: {pid!r}")
    storage_type, key = pid[1], pid[2]
    if not isinstance(storage_type, _StorageType):
      raise CheckpointFormatError(f"unsupported storage type in checkpoint: {storage_type!r}")
    return self._read_storage(str(key), storage_type.dtype)


def load_torch_file(path: str) -> Any:
  """Unpickles a PyTorch zip checkpoint into plain Python containers of numpy arrays.

  Raises:
    UnsafeCheckpointError: the pickle names a global outside the allow-list.
    CheckpointFormatError: not a PyTorch zip archive (e.g. the pre-1.6 legacy format).
  """
  if not zipfile.is_zipfile(path):
    raise CheckpointFormatError(
        f"{path} is not a PyTorch zip checkpoint (legacy torch pickles and other formats "
        f"are not supported; re-save with torch>=1.6 or convert to .safetensors)")
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if len(pkl) != 1:
      raise CheckpointFormatError(f"{path}: expected one data.pkl in the archive, found {len(pkl)}")
    root = pkl[0][:-len("data.pkl")]
    byteorder = root + "byteorder"
    if byteorder in names and zf.read(byteorder).strip() != b"little":
      raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported")
    cache: dict[str, np.ndarray] = {}

    def read_storage(key: str, dtype: np.dtype) -> np.ndarray:
      if key not in cache:
        member = f"{root}data/{key}"
        if member not in names:
          raise CheckpointFormatError(f"{path}: storage {member} is missing from the archive")
        cache[key] = np.frombuffer(zf.read(member), dtype=dtype)
      return cache[key]

    return _SafeUnpickler(zf.read(pkl[0]), read_storage).load()
