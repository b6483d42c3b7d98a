"""Test helper: writes PyTorch-format zip checkpoints without torch.

``torch.save(obj, f)`` writes a zip archive with ``<root>/data.pkl`` (a protocol-2 pickle),
one raw little-endian buffer per tensor storage ``<root>/data/<key>``, and
``<root>/byteorder`` / ``<root>/version``. In the pickle every tensor is
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``
with the storage given as the persistent id ``("storage", torch.FloatStorage, key, "cpu",
numel)``. The opcodes are written by hand here, since pickling the real call would need
torch importable.
"""

from __future__ import annotations

import collections
import struct
import zipfile

import numpy as np

_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
             np.dtype(np.int64): "LongStorage", np.dtype(np.float16): "HalfStorage"}


class _Writer:
  """Emits pickle opcodes for plain values and numpy arrays (as torch tensors)."""

  def __init__(self, fortran: bool):
    self.out = bytearray(b"\x80\x02")  # PROTO 2
    self.storages: list[bytes] = []
    self.fortran = fortran  # store 2-D+ tensors column-major, to exercise strides

  def global_(self, module: str, name: str) -> None:
    self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

  def value(self, v) -> None:
    if v is None:
      self.out += b"N"
    elif isinstance(v, bool):
      self.out += b"\x88" if v else b"\x89"
    elif isinstance(v, int):
      if -2**31 <= v < 2**31:
        self.out += b"J" + struct.pack("<i", v)
      else:
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        self.out += b"\x8a" + bytes([len(raw)]) + raw
    elif isinstance(v, float):
      self.out += b"G" + struct.pack(">d", v)
    elif isinstance(v, str):
      raw = v.encode()
      self.out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(v, tuple):
      self.out += b"("
      for x in v:
        self.value(x)
      self.out += b"t"
    elif isinstance(v, list):
      self.out += b"]("
      for x in v:
        self.value(x)
      self.out += b"e"
    elif isinstance(v, dict):
      if isinstance(v, collections.OrderedDict):
        self.global_("collections", "OrderedDict")
        self.out += b")R"
      else:
        self.out += b"}"
      if v:
        self.out += b"("
        for k, x in v.items():
          self.value(k)
          self.value(x)
        self.out += b"u"
    elif isinstance(v, np.ndarray):
      self.tensor(v)
    else:
      raise TypeError(f"cannot write {type(v)}")

  def tensor(self, a: np.ndarray) -> None:
    a = np.asarray(a)
    if self.fortran and a.ndim >= 2:
      data = np.asfortranarray(a)
      stride = tuple(s // a.itemsize for s in data.strides)
      raw = data.T.tobytes()  # column-major bytes of a
    else:
      stride = tuple(s // a.itemsize for s in np.ascontiguousarray(a).strides)
      raw = np.ascontiguousarray(a).tobytes()
    key = str(len(self.storages))
    self.storages.append(raw)
    self.global_("torch._utils", "_rebuild_tensor_v2")
    self.out += b"("
    self.out += b"("  # the persistent id tuple
    self.value("storage")
    self.global_("torch", _STORAGES[a.dtype])
    self.value(key)
    self.value("cpu")
    self.value(int(a.size))
    self.out += b"tQ"  # TUPLE, BINPERSID
    self.value(0)
    self.value(tuple(int(s) for s in a.shape))
    self.value(stride)
    self.value(False)
    self.value(collections.OrderedDict())
    self.out += b"tR"  # TUPLE, REDUCE


def write_torch_zip(path: str, obj, fortran: bool = False, root: str = "archive") -> None:
  """Writes ``obj`` (dicts, lists, tuples, scalars, numpy arrays) like ``torch.save``."""
  w = _Writer(fortran)
  w.value(obj)
  w.out += b"."
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr(f"{root}/data.pkl", bytes(w.out))
    zf.writestr(f"{root}/byteorder", "little")
    for key, raw in enumerate(w.storages):
      zf.writestr(f"{root}/data/{key}", raw)
    zf.writestr(f"{root}/version", "3\n")


def write_malicious_zip(path: str, command: str) -> None:
  """A torch-style zip whose pickle calls ``os.system(command)`` when unpickled."""
  w = _Writer(False)
  w.out += b"}("
  w.value("state_dict")
  w.global_("os", "system")
  w.out += b"("
  w.value(command)
  w.out += b"tR"  # os.system(command)
  w.out += b"u."
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", bytes(w.out))
    zf.writestr("archive/byteorder", "little")
    zf.writestr("archive/version", "3\n")


def write_crafted_zip(path: str, tensors: dict, storages: dict[str, bytes],
                      storage_type: str = "FloatStorage") -> None:
  """A torch-style zip whose tensors are given as raw ``_rebuild_tensor_v2`` arguments.

  ``tensors`` maps a state-dict name to ``(storage, offset, size, stride)``; ``storage`` is a
  ``(key, numel)`` pair (a persistent id to ``storages[key]``) or any other plain value,
  which is pickled in the storage's place. Used to build hostile files no torch would write.
  """
  w = _Writer(False)
  w.global_("collections", "OrderedDict")
  w.out += b")R("
  for name, (storage, offset, size, stride) in tensors.items():
    w.value(name)
    w.global_("torch._utils", "_rebuild_tensor_v2")
    w.out += b"("
    if isinstance(storage, tuple):
      key, numel = storage
      w.out += b"("
      w.value("storage")
      w.global_("torch", storage_type)
      w.value(key)
      w.value("cpu")
      w.value(numel)
      w.out += b"tQ"
    else:
      w.value(storage)
    for v in (offset, size, stride, False):
      w.value(v)
    w.value(collections.OrderedDict())
    w.out += b"tR"
  w.out += b"u."
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", bytes(w.out))
    zf.writestr("archive/byteorder", "little")
    for key, raw in storages.items():
      zf.writestr(f"archive/data/{key}", raw)
    zf.writestr("archive/version", "3\n")
