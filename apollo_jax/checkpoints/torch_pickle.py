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
import math
import pickle
import struct
import zipfile
import zlib
from typing import Any

import ml_dtypes
import numpy as np

from apollo_jax.checkpoints.errors import CheckpointFormatError, UnsafeCheckpointError


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


class _Budget:
  """Bytes the tensors of one file may still take: a few views of the same storage are
  normal (tied weights), thousands of them would exhaust memory from a small file."""

  def __init__(self, limit: int):
    self.left = limit

  def spend(self, nbytes: int) -> None:
    self.left -= nbytes
    if self.left < 0:
      raise CheckpointFormatError(
          "the tensors of this checkpoint would take far more memory than its storages hold; "
          "refusing to build them")


class _Storage:
  """A storage read from the archive: 1-D ``data``. Only persistent ids make these, so the
  pickle cannot pass anything else off as one."""

  def __init__(self, data: np.ndarray, budget: _Budget):
    self.data, self.budget = data, budget


# A view may repeat storage elements (zero strides, as ``expand`` saves them); beyond this
# many elements more than its storage holds it is refused, so a crafted file cannot make us
# allocate gigabytes from a few bytes.
_MAX_EXPANDED_ELEMENTS = 1 << 24


def _index_list(value, what: str) -> tuple[int, ...]:
  """``value`` as a tuple of non-negative ints (a tensor's size or stride)."""
  if not isinstance(value, (tuple, list)) or not all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
    raise CheckpointFormatError(f"tensor {what} must be a tuple of non-negative integers, got "
                                f"{_short(value)}")
  return tuple(value)


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """A copy of the view ``(offset, size, stride)`` of ``storage``, checked before it is made.

  Every argument comes from the file: the storage must be one read from the archive, and
  the view must lie inside it (``as_strided`` itself would read any memory it is told to).
  """
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise CheckpointFormatError(f"tensor storage must be a storage from the archive, got "
                                f"{type(storage).__name__} {_short(storage)}")
  data = storage.data
  if isinstance(storage_offset, bool) or not isinstance(storage_offset, int) or not (
      0 <= storage_offset <= data.size):
    raise CheckpointFormatError(
        f"tensor offset {_short(storage_offset)} lies outside its storage of {data.size} elements")
  size, stride = _index_list(size, "size"), _index_list(stride, "stride")
  if len(size) != len(stride):
    raise CheckpointFormatError(f"tensor size {size} and stride {stride} differ in length")
  numel = math.prod(size)
  if numel == 0:
    return np.zeros(size, data.dtype)
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size:
    raise CheckpointFormatError(
        f"tensor view (offset {storage_offset}, size {size}, stride {stride}) reaches element "
        f"{last} of a storage with {data.size}")
  if numel > max(data.size, _MAX_EXPANDED_ELEMENTS):
    raise CheckpointFormatError(
        f"tensor view of size {size} repeats its {data.size}-element storage into {numel} "
        f"elements; refusing to allocate that")
  storage.budget.spend(numel * data.itemsize)
  if not size:
    return np.array(data[storage_offset], copy=True)
  view = np.lib.stride_tricks.as_strided(
      data[storage_offset:], shape=size, strides=[s * data.itemsize for s in stride])
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

  def __init__(self, data: bytes, read_storage, budget: _Budget):
    super().__init__(io.BytesIO(data))
    self._read_storage = read_storage
    self._budget = budget

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f"refusing to load global '{module}.{name}' from the checkpoint: only tensors and "
          f"plain containers are allowed (nothing from the file was executed)") from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
      raise UnsafeCheckpointError(f"unsupported persistent id in checkpoint: {_short(pid)}")
    storage_type, key = pid[1], pid[2]
    if not isinstance(storage_type, _StorageType):
      raise CheckpointFormatError(f"unsupported storage type in checkpoint: {_short(storage_type)}")
    if not isinstance(key, (str, int)) or isinstance(key, bool):
      raise CheckpointFormatError(f"storage key must be a string, got {_short(key)}")
    numel = pid[4] if len(pid) > 4 else None
    if numel is not None and (isinstance(numel, bool) or not isinstance(numel, int) or numel < 0):
      raise CheckpointFormatError(f"storage size must be a non-negative integer, got {_short(numel)}")
    return _Storage(self._read_storage(str(key), storage_type.dtype, numel), self._budget)


# zlib's deflate cannot expand data by more than this factor: a member claiming more is
# a crafted header (a "zip bomb"), refused before anything is decompressed.
_MAX_DEFLATE_RATIO = 1032

# What a corrupt archive or pickle raises from zipfile, zlib and the unpickler itself.
_CORRUPT_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, EOFError, ValueError,
                   TypeError, KeyError, IndexError, AttributeError, OverflowError,
                   RecursionError, NotImplementedError, UnicodeDecodeError, struct.error)


def load_torch_file(path: str) -> Any:
  """Unpickles a PyTorch zip checkpoint into plain Python containers of numpy arrays.

  Every storage is checked against its declared size, and every tensor view against its
  storage, before any data is read through it.

  Raises:
    UnsafeCheckpointError: the pickle names a global outside the allow-list.
    CheckpointFormatError: not a PyTorch zip archive (e.g. the pre-1.6 legacy format), or
      a corrupt or inconsistent one.
  """
  if not zipfile.is_zipfile(path):
    raise CheckpointFormatError(
        f"{path} is not a PyTorch zip checkpoint (legacy torch pickles and other formats "
        f"are not supported; re-save with torch>=1.6 or convert to .safetensors)")
  try:
    with zipfile.ZipFile(path) as zf:
      return _load_archive(path, zf)
  except (UnsafeCheckpointError, CheckpointFormatError):
    raise
  except _CORRUPT_ERRORS as e:
    raise CheckpointFormatError(
        f"{path} is a corrupt PyTorch checkpoint ({type(e).__name__}: {_short(str(e))})") from None


def _read_member(zf: zipfile.ZipFile, path: str, member: str) -> bytes:
  """A member's bytes, refusing sizes its compressed length cannot produce."""
  info = zf.getinfo(member)
  if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
    raise CheckpointFormatError(
        f"{path}: {member} claims {info.file_size} bytes from {info.compress_size} compressed")
  return zf.read(member)


def _load_archive(path: str, zf: zipfile.ZipFile) -> Any:
  names = zf.namelist()
  pkl = [n for n in names if n.endswith("data.pkl")]
  if len(pkl) != 1:
    raise CheckpointFormatError(f"{path}: expected one data.pkl in the archive, found {len(pkl)}")
  root = pkl[0][:-len("data.pkl")]
  byteorder = root + "byteorder"
  if byteorder in names and zf.read(byteorder).strip() != b"little":
    raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported")
  cache: dict[tuple[str, str], np.ndarray] = {}

  def read_storage(key: str, dtype: np.dtype, numel: int | None) -> np.ndarray:
    member = f"{root}data/{key}"
    if member not in names:
      raise CheckpointFormatError(f"{path}: storage {member} is missing from the archive")
    if numel is not None and zf.getinfo(member).file_size < numel * dtype.itemsize:
      raise CheckpointFormatError(
          f"{path}: storage {member} holds {zf.getinfo(member).file_size} bytes, fewer than "
          f"its {numel} {dtype} elements need")
    if (key, dtype.str) not in cache:
      raw = _read_member(zf, path, member)
      if len(raw) % dtype.itemsize:
        raise CheckpointFormatError(
            f"{path}: storage {member} has {len(raw)} bytes, not a whole number of {dtype} items")
      cache[(key, dtype.str)] = np.frombuffer(raw, dtype=dtype)
    data = cache[(key, dtype.str)]
    return data if numel is None else data[:numel]

  stored = sum(zf.getinfo(n).file_size for n in names if n.startswith(f"{root}data/"))
  budget = _Budget(4 * stored + (64 << 20))
  return _SafeUnpickler(_read_member(zf, path, pkl[0]), read_storage, budget).load()
