"""Bridge between the published PyTorch checkpoints and apollo-jax parameters.

Reads ``.safetensors`` state dicts and PyTorch zip pickles (release files
``{"model_name", "state_dict", "model_args"}``, Lightning checkpoints with
``audio_model.`` / ``discriminator.`` prefixes, bare state dicts) without importing torch
and without executing anything from the pickle (see :mod:`apollo_jax.checkpoints.torch_pickle`).
The generator config is inferred from tensor shapes and checked for consistency.

Command line (:mod:`apollo_jax.cli.interop`)::

  python -m apollo_jax.interop convert IN OUT_DIR        # published file -> orbax params
  python -m apollo_jax.interop export IN OUT.safetensors  # ours/published -> official names
  python -m apollo_jax.interop export IN OUT.npz --format stablehlo   # apollo_jax.inference.deploy
  python -m apollo_jax.interop export IN OUT.onnx --format onnx       # (optional extra)
  python -m apollo_jax.interop compare REF.wav OURS.wav   # null test (apollo_jax.evaluation.nulltest)
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Mapping

import numpy as np

from apollo_jax.audio import current_umask
from apollo_jax.config import ApolloConfig
from apollo_jax.layers import rotary_tables
from apollo_jax.checkpoints.errors import CheckpointFormatError
from apollo_jax.checkpoints.torch_pickle import load_torch_file

__all__ = [
    "read_state_dict",
    "config_from_state_dict", "generator_params_from_state_dict",
    "generator_state_dict_from_params", "load_torch_generator", "save_torch_generator",
    "discriminator_variables_from_state_dict", "discriminator_state_dict_from_variables",
    "load_torch_discriminator",
]

# Rates a state dict without model_args may be inferred at, assuming the published 20 ms
# window (n_fft = rate / 50); the FFT size alone cannot tell 44.1 kHz / 20 ms from
# 48 kHz / 18.375 ms, so only these common rates are guessed and anything else is an error.
STANDARD_RATES = (16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
PUBLISHED_WIN_MS = 20
# Where other trainers keep the state dict inside the pickled object (MSST, plain scripts).
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "state")
# Marker keys: the prefix in front of them is the sub-module's (Lightning ``audio_model.``,
# MSST ``model.`` / DataParallel ``module.``, torch.compile ``_orig_mod.``, any nesting).
_GEN_MARKER = "BN.0.0.weight"
_DISC_MARKERS = ("discriminators.0.discriminator.0.0.weight_orig",)
# The published band transformer registers rotary tables for this many positions.
_ROTARY_POSITIONS = 100


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads any supported checkpoint file into ``(flat state dict, model_args)``.

  ``model_args`` is the release file's ``model_args`` dict (empty when absent).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if os.path.isdir(path):
    raise CheckpointFormatError(f"{path} is a directory, expected a checkpoint file")
  if path.endswith(".safetensors"):
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file
    try:
      with safe_open(path, "numpy") as f:
        meta = f.metadata() or {}
      return dict(load_file(path)), _args_from_metadata(meta)
    except (SafetensorError, OSError, ValueError) as e:
      raise CheckpointFormatError(f"{path} is not a valid .safetensors file: {e}") from None
  obj = load_torch_file(path)
  model_args: dict[str, Any] = {}
  if isinstance(obj, Mapping):
    for key in _STATE_KEYS:
      if isinstance(obj.get(key), Mapping):
        args = obj.get("model_args")
        model_args = dict(args) if isinstance(args, Mapping) else {}
        obj = obj[key]
        break
  if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
    raise CheckpointFormatError(f"{path} does not hold a state dict (got {type(obj).__name__})")
  sd = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
  if not sd:
    raise CheckpointFormatError(f"{path} holds no tensors")
  return sd, model_args


def _args_from_metadata(meta: Mapping[str, str]) -> dict[str, Any]:
  """``model_args`` from the string metadata :func:`save_torch_generator` writes."""
  args: dict[str, Any] = {}
  if "sr" in meta:
    args["sr"] = int(meta["sr"])
  if "win" in meta:
    win = float(meta["win"])
    args["win"] = int(win) if win.is_integer() else win
  for key in ("feature_dim", "layer"):
    if key in meta:
      args[key] = int(meta[key])
  for key in ("causal", "residual"):  # Variants the published model lacks.
    if key in meta:
      args[key] = meta[key] == "True"
  return args


def strip_prefix(sd: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """Keeps the keys under ``prefix`` (a Lightning sub-module), without it; all if none match."""
  picked = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
  return picked or dict(sd)


def _module_prefix(sd: Mapping[str, np.ndarray], markers: tuple[str, ...], what: str) -> str | None:
  """The key prefix in front of ``markers`` (e.g. ``audio_model._orig_mod.``), None if absent."""
  found = sorted({k[:-len(m)] for k in sd for m in markers
                  if k.endswith(m) and (k == m or k[-len(m) - 1] == ".")})
  if not found:
    return None
  if len(found) > 1:
    raise CheckpointFormatError(
        f"the checkpoint holds {len(found)} {what}s (prefixes {found[:4]}); keep one of them")
  return found[0]


def generator_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The generator's keys of any trainer's state dict, with the official names.

  Finds the prefix in front of ``BN.0.0.weight`` (``audio_model.``, ``model.``,
  ``module.``, ``_orig_mod.`` or any nesting of them) and keeps only the keys under it,
  so a discriminator or optimiser saved alongside is ignored.
  """
  prefix = _module_prefix(sd, (_GEN_MARKER,), "generator")
  if prefix is None:
    return dict(sd)  # config_from_state_dict says what is missing.
  return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _count(sd: Mapping[str, np.ndarray], pattern: str) -> int:
  regex = re.compile(pattern)
  found = {int(m.group(1)) for k in sd if (m := regex.fullmatch(k))}
  if found and found != set(range(len(found))):
    raise CheckpointFormatError(f"non-contiguous indices for {pattern}: {sorted(found)}")
  return len(found)


def _infer_win_ms(n_bins: int, bw: int, sample_rate: int) -> float:
  """Window length in ms for which the published rule gives ``n_bins`` bins of width ``bw``."""
  fits = []
  for n_fft in (2 * (n_bins - 1), 2 * (n_bins - 1) + 1):
    if int(n_fft / 160) != bw:
      continue
    for win_ms in (round(n_fft * 1000 / sample_rate), n_fft * 1000 / sample_rate):
      if win_ms > 0 and int(sample_rate * win_ms // 1000) == n_fft:
        fits.append(win_ms)
        break
  if not fits:
    raise CheckpointFormatError(
        f"no window length at sample_rate={sample_rate} gives {n_bins} frequency bins with "
        f"band width {bw}; is the sample rate right?")
  # Prefer the integer window (the published configs use whole milliseconds).
  return sorted(fits, key=lambda w: float(w) != int(w))[0]


def infer_sample_rate(n_bins: int, bw: int, win_ms: float = PUBLISHED_WIN_MS) -> int:
  """The standard rate whose ``win_ms`` window gives ``n_bins`` bins of band width ``bw``.

  Raises CheckpointFormatError naming ``--sample-rate`` when no standard rate fits.
  """
  fits = [r for r in STANDARD_RATES
          if (n := int(r * win_ms // 1000)) // 2 + 1 == n_bins and int(n / 160) == bw]
  if len(fits) != 1:
    raise CheckpointFormatError(
        f"cannot tell the checkpoint's sample rate: its {n_bins} frequency bins fit "
        f"{'no' if not fits else 'more than one'} standard rate "
        f"({', '.join(map(str, STANDARD_RATES))} Hz) with a {win_ms:g} ms window; "
        f"pass --sample-rate (and --win-ms if the window is not {PUBLISHED_WIN_MS} ms)")
  return fits[0]


def config_from_state_dict(sd: Mapping[str, np.ndarray], sample_rate: int | None = None,
                           model_args: Mapping[str, Any] | None = None,
                           win_ms: float | None = None) -> ApolloConfig:
  """Infers the generator config from tensor shapes (and ``model_args`` when present).

  Sample rate and window, first match wins: the file's ``model_args`` (an explicit
  ``sample_rate`` / ``win_ms`` that contradicts it is an error), the arguments, then the
  standard rate that gives the FFT size with the published 20 ms window
  (:func:`infer_sample_rate`).
  """
  model_args = dict(model_args or {})
  if sample_rate is not None and "sr" in model_args and int(model_args["sr"]) != sample_rate:
    raise CheckpointFormatError(
        f"checkpoint was made for sample rate {model_args['sr']} (its model_args), but "
        f"--sample-rate {sample_rate} was given")
  if win_ms is not None and "win" in model_args and float(model_args["win"]) != float(win_ms):
    raise CheckpointFormatError(
        f"checkpoint was made with a {model_args['win']} ms window (its model_args), but "
        f"--win-ms {win_ms:g} was given")
  if "win" in model_args:
    win_ms = model_args["win"]
  num_bands = _count(sd, r"BN\.(\d+)\.0\.weight")
  num_layers = _count(sd, r"net\.(\d+)\.band_net\.input_norm\.weight")
  if num_bands == 0 or num_layers == 0:
    raise CheckpointFormatError(
        "not an Apollo generator state dict: no 'BN.<i>.0.weight' / "
        "'net.<l>.band_net.input_norm.weight' keys")
  widths = [(sd[f"BN.{i}.0.weight"].shape[0] - 1) // 2 for i in range(num_bands)]
  feature_dim = int(sd["BN.0.1.weight"].shape[0])
  tcn_units = _count(sd, r"net\.0\.seq_net\.blocks\.(\d+)\.conv\.0\.weight")
  tcn_kernel = int(sd["net.0.seq_net.blocks.0.conv.0.weight"].shape[-1])
  if "net.0.band_net.cos_freq" in sd:
    head_dim = int(sd["net.0.band_net.cos_freq"].shape[-1])
    num_heads = feature_dim // head_dim
  else:
    num_heads = int(model_args.get("num_heads", 8))
  n_bins = sum(widths)
  if sample_rate is None and "sr" not in model_args:
    sample_rate = infer_sample_rate(n_bins, widths[0], PUBLISHED_WIN_MS if win_ms is None else win_ms)
  sample_rate = int(sample_rate or model_args["sr"])
  if win_ms is None:
    win_ms = _infer_win_ms(n_bins, widths[0], sample_rate)
  for name, key in (("feature_dim", "feature_dim"), ("num_layers", "layer")):
    if key in model_args and int(model_args[key]) != locals()[name]:
      raise CheckpointFormatError(
          f"model_args says {key}={model_args[key]} but the tensors give {locals()[name]}")
  try:
    cfg = ApolloConfig(sample_rate=sample_rate, win_ms=win_ms, feature_dim=feature_dim,
                       num_layers=num_layers, num_heads=num_heads, num_bands=num_bands,
                       tcn_units=tcn_units, tcn_kernel=tcn_kernel,
                       causal=bool(model_args.get("causal", False)),
                       residual=bool(model_args.get("residual", False)))
  except ValueError as e:
    raise CheckpointFormatError(f"inconsistent generator checkpoint: {e}") from None
  if list(cfg.band_widths) != widths:
    raise CheckpointFormatError(
        f"band widths in the checkpoint ({widths[0]} x {num_bands - 1} + {widths[-1]}) do not "
        f"match sample_rate={sample_rate}, win_ms={win_ms} "
        f"({cfg.band_widths[0]} x {num_bands - 1} + {cfg.band_widths[-1]})")
  return cfg


def _pw(w: np.ndarray) -> np.ndarray:
  """Torch 1x1 conv weight (out, in, 1) -> our kernel (in, out)."""
  return np.ascontiguousarray(w[..., 0].T)


def _pw_back(k: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(k).T[..., None])


def _expected_shapes(cfg: ApolloConfig) -> dict[str, tuple[int, ...]]:
  f, widths = cfg.feature_dim, cfg.band_widths
  shapes: dict[str, tuple[int, ...]] = {}
  for i, w in enumerate(widths):
    shapes |= {f"BN.{i}.0.weight": (2 * w + 1,), f"BN.{i}.1.weight": (f, 2 * w + 1, 1),
               f"BN.{i}.1.bias": (f,), f"output.{i}.0.weight": (f,),
               f"output.{i}.1.weight": (4 * w, f, 1), f"output.{i}.1.bias": (4 * w,)}
  for l in range(cfg.num_layers):
    b = f"net.{l}.band_net."
    shapes |= {b + "input_norm.weight": (f,), b + "weight.weight": (3 * f, f, 1),
               b + "output.weight": (f, f, 1), b + "MLP.0.weight": (f,),
               b + "MLP.1.weight": (8 * f, f, 1), b + "MLP_output.weight": (f, 4 * f, 1)}
    for u in range(cfg.tcn_units):
      c = f"net.{l}.seq_net.blocks.{u}.conv."
      shapes |= {c + "0.weight": (f, 1, cfg.tcn_kernel), c + "0.bias": (f,),
                 c + "1.weight": (f,), c + "2.weight": (4 * f, f, 1), c + "2.bias": (4 * f,),
                 c + "4.weight": (f, 4 * f, 1), c + "4.bias": (f,)}
  return shapes


def _rotary_keys(cfg: ApolloConfig) -> list[str]:
  return [f"net.{l}.band_net.{n}" for l in range(cfg.num_layers) for n in ("cos_freq", "sin_freq")]


def _check_layout(sd: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
                  what: str, against: str, ignored: Any = ()) -> None:
  """CheckpointFormatError unless ``sd`` has exactly the ``expected`` keys (plus ``ignored``
  ones) with the expected shapes; ``what``/``against`` word the message."""
  missing = sorted(set(expected) - set(sd))
  unexpected = sorted(set(sd) - set(expected) - set(ignored))
  if missing or unexpected:
    raise CheckpointFormatError(
        f"{what} state dict does not match {against}: missing {missing[:5]}"
        f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
        f"{'...' if len(unexpected) > 5 else ''}")
  bad = [f"{k}: {tuple(sd[k].shape)} != {s}" for k, s in expected.items() if tuple(sd[k].shape) != s]
  if bad:
    raise CheckpointFormatError(f"{what} tensor shapes are inconsistent: " + "; ".join(bad[:5]))


def _band_layers(t: dict[str, np.ndarray], prefix: str, bands: int) -> dict[str, np.ndarray]:
  """Band split (``BN``) or band merge (``output``) layers: the equal-width bands stacked,
  the last (wider) band apart."""
  eq, last = range(bands - 1), bands - 1
  return {
      "eq_norm": np.stack([t[f"{prefix}.{i}.0.weight"] for i in eq]),
      "eq_kernel": np.stack([_pw(t[f"{prefix}.{i}.1.weight"]) for i in eq]),
      "eq_bias": np.stack([t[f"{prefix}.{i}.1.bias"] for i in eq]),
      "last_norm": t[f"{prefix}.{last}.0.weight"],
      "last_kernel": _pw(t[f"{prefix}.{last}.1.weight"]),
      "last_bias": t[f"{prefix}.{last}.1.bias"],
  }


def generator_params_from_state_dict(sd: Mapping[str, np.ndarray], cfg: ApolloConfig) -> dict:
  """Official generator state dict -> our parameter tree (numpy float32 arrays)."""
  _check_layout(sd, _expected_shapes(cfg), "generator", f"{cfg}", ignored=_rotary_keys(cfg))
  t = {k: np.asarray(v, np.float32) for k, v in sd.items()}
  params: dict[str, Any] = {
      "band_split": _band_layers(t, "BN", cfg.num_bands),
      "band_merge": _band_layers(t, "output", cfg.num_bands),
  }
  for l in range(cfg.num_layers):
    b = f"net.{l}.band_net."
    block: dict[str, Any] = {"band": {
        "attn_norm": t[b + "input_norm.weight"], "qkv": _pw(t[b + "weight.weight"]),
        "out": _pw(t[b + "output.weight"]), "mlp_norm": t[b + "MLP.0.weight"],
        "mlp_in": _pw(t[b + "MLP.1.weight"]), "mlp_out": _pw(t[b + "MLP_output.weight"]),
    }}
    for u in range(cfg.tcn_units):
      c = f"net.{l}.seq_net.blocks.{u}.conv."
      block[f"time_{u}"] = {
          "dw_kernel": np.ascontiguousarray(t[c + "0.weight"][:, 0, :].T), "dw_bias": t[c + "0.bias"],
          "norm": t[c + "1.weight"], "pw1_kernel": _pw(t[c + "2.weight"]), "pw1_bias": t[c + "2.bias"],
          "pw2_kernel": _pw(t[c + "4.weight"]), "pw2_bias": t[c + "4.bias"],
      }
    params[f"block_{l}"] = block
  return params


def generator_state_dict_from_params(cfg: ApolloConfig, params: Mapping) -> dict[str, np.ndarray]:
  """Our parameter tree -> the official state dict names (with the rotary buffers)."""
  p = _to_numpy(params)
  sd: dict[str, np.ndarray] = {}
  n = cfg.num_bands
  for prefix, src in (("BN", p["band_split"]), ("output", p["band_merge"])):
    for i in range(n):
      if i < n - 1:
        norm, kernel, bias = src["eq_norm"][i], src["eq_kernel"][i], src["eq_bias"][i]
      else:
        norm, kernel, bias = src["last_norm"], src["last_kernel"], src["last_bias"]
      sd[f"{prefix}.{i}.0.weight"] = np.ascontiguousarray(norm)
      sd[f"{prefix}.{i}.1.weight"] = _pw_back(kernel)
      sd[f"{prefix}.{i}.1.bias"] = np.ascontiguousarray(bias)
  cos, sin = rotary_tables(_ROTARY_POSITIONS, cfg.head_dim)
  for l in range(cfg.num_layers):
    blk = p[f"block_{l}"]
    b = f"net.{l}.band_net."
    band = blk["band"]
    sd |= {b + "cos_freq": cos, b + "sin_freq": sin,
           b + "input_norm.weight": band["attn_norm"], b + "weight.weight": _pw_back(band["qkv"]),
           b + "output.weight": _pw_back(band["out"]), b + "MLP.0.weight": band["mlp_norm"],
           b + "MLP.1.weight": _pw_back(band["mlp_in"]),
           b + "MLP_output.weight": _pw_back(band["mlp_out"])}
    for u in range(cfg.tcn_units):
      unit = blk[f"time_{u}"]
      c = f"net.{l}.seq_net.blocks.{u}.conv."
      sd |= {c + "0.weight": np.ascontiguousarray(unit["dw_kernel"].T[:, None, :]),
             c + "0.bias": unit["dw_bias"], c + "1.weight": unit["norm"],
             c + "2.weight": _pw_back(unit["pw1_kernel"]), c + "2.bias": unit["pw1_bias"],
             c + "4.weight": _pw_back(unit["pw2_kernel"]), c + "4.bias": unit["pw2_bias"]}
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def _to_numpy(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def load_torch_generator(path: str, sample_rate: int | None = None,
                         win_ms: float | None = None) -> tuple[ApolloConfig, dict]:
  """Loads a published generator checkpoint: ``(ApolloConfig, params)``.

  Accepts ``.safetensors`` or a PyTorch zip pickle (release format, Lightning checkpoint
  with ``audio_model.`` prefix, MSST ``model.`` / ``module.``, ``torch.compile``
  ``_orig_mod.``, or a bare state dict). Sample rate and window: see
  :func:`config_from_state_dict`.
  """
  sd, model_args = read_state_dict(path)
  sd = generator_state_dict(sd)
  cfg = config_from_state_dict(sd, sample_rate, model_args, win_ms)
  return cfg, generator_params_from_state_dict(sd, cfg)


def save_torch_generator(cfg: ApolloConfig, params: Mapping, path: str) -> None:
  """Writes ``params`` under the official state-dict names as ``.safetensors`` (atomically).

  The config goes into the file's metadata, so :func:`load_torch_generator` restores it
  exactly, including the causal / residual variants (which the published code lacks: it
  would load their weights but compute a different function).
  """
  from safetensors.numpy import save_file
  if not path.endswith(".safetensors"):
    raise ValueError(f"export writes .safetensors files, got {path}")
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors",
                             dir=os.path.dirname(os.path.abspath(path)))
  os.close(fd)
  try:
    save_file(generator_state_dict_from_params(cfg, params), tmp,
              metadata={"format": "pt", "sr": str(cfg.sample_rate), "win": str(cfg.win_ms),
                        "feature_dim": str(cfg.feature_dim), "layer": str(cfg.num_layers),
                        "causal": str(cfg.causal), "residual": str(cfg.residual)})
    os.chmod(tmp, 0o666 & ~current_umask())  # not mkstemp's 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise



# Discriminator: discriminators.<w>.discriminator.<j>.0.{weight_orig, weight_u, weight_v, bias}
# for the six spectrally normalised convs, discriminators.<w>.discriminator.6.{weight, bias}.
_DISC_PREFIX = "discriminators.{w}.discriminator.{j}."


def _disc_layout(num_windows: int, channels: int, hidden: int) -> dict[str, tuple[int, ...]]:
  """Official discriminator names -> shapes."""
  from apollo_jax.gan.discriminator import STRIDES
  shapes: dict[str, tuple[int, ...]] = {}
  last = len(STRIDES) - 1
  for w in range(num_windows):
    cin = 2 * channels
    for j in range(len(STRIDES)):
      cout = 1 if j == last else hidden * 2 ** j
      p = _DISC_PREFIX.format(w=w, j=j)
      if j == last:
        shapes |= {p + "weight": (cout, cin, 3, 3), p + "bias": (cout,)}
      else:
        shapes |= {p + "0.weight_orig": (cout, cin, 3, 3), p + "0.bias": (cout,),
                   p + "0.weight_u": (cout,), p + "0.weight_v": (cin * 9,)}
      cin = cout
  return shapes


def discriminator_variables_from_state_dict(sd: Mapping[str, np.ndarray], num_windows: int = 7,
                                            channels: int = 2, hidden: int = 8) -> dict:
  """Official discriminator state dict -> ``{"params": ..., "spectral": ...}`` (numpy)."""
  from apollo_jax.gan.discriminator import STRIDES
  _check_layout(sd, _disc_layout(num_windows, channels, hidden), "discriminator",
                f"{num_windows} windows, {channels} channels, hidden {hidden}")
  params: dict[str, Any] = {}
  spectral: dict[str, Any] = {}
  last = len(STRIDES) - 1
  for w in range(num_windows):
    for j in range(len(STRIDES)):
      p = _DISC_PREFIX.format(w=w, j=j)
      weight = p + "weight" if j == last else p + "0.weight_orig"
      bias = p + "bias" if j == last else p + "0.bias"
      # torch (out, in, kh, kw) -> flax HWIO (kh, kw, in, out)
      params.setdefault(f"disc_{w}", {})[f"conv_{j}"] = {
          "kernel": np.ascontiguousarray(np.transpose(np.asarray(sd[weight], np.float32), (2, 3, 1, 0))),
          "bias": np.asarray(sd[bias], np.float32)}
      if j != last:
        spectral.setdefault(f"disc_{w}", {})[f"conv_{j}"] = {
            "u": np.asarray(sd[p + "0.weight_u"], np.float32),
            "v": np.asarray(sd[p + "0.weight_v"], np.float32)}
  return {"params": params, "spectral": spectral}


def discriminator_state_dict_from_variables(variables: Mapping) -> dict[str, np.ndarray]:
  """``{"params", "spectral"}`` -> the official discriminator state-dict names."""
  params, spectral = _to_numpy(variables["params"]), _to_numpy(variables["spectral"])
  sd: dict[str, np.ndarray] = {}
  for w in range(len(params)):
    convs = params[f"disc_{w}"]
    last = len(convs) - 1
    for j in range(len(convs)):
      p = _DISC_PREFIX.format(w=w, j=j)
      conv = convs[f"conv_{j}"]
      weight = np.transpose(conv["kernel"], (3, 2, 0, 1))
      if j == last:
        sd |= {p + "weight": weight, p + "bias": conv["bias"]}
      else:
        sn = spectral[f"disc_{w}"][f"conv_{j}"]
        sd |= {p + "0.weight_orig": weight, p + "0.bias": conv["bias"],
               p + "0.weight_u": sn["u"], p + "0.weight_v": sn["v"]}
  return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def discriminator_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
  """The discriminator's keys of any trainer's state dict (prefix removed), None if absent."""
  prefix = _module_prefix(sd, _DISC_MARKERS, "discriminator")
  if prefix is None:
    return None
  return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def load_torch_discriminator(path: str, num_windows: int = 7, channels: int = 2,
                             hidden: int = 8) -> dict:
  """Loads a published discriminator: ``{"params": ..., "spectral": ...}``.

  Accepts ``.safetensors`` or a PyTorch zip pickle (Lightning checkpoint with the
  ``discriminator.`` prefix, nested ``_orig_mod.`` / ``module.`` prefixes, or a bare state
  dict), read without executing the pickle. ``weight_orig`` becomes the conv kernel and
  ``weight_u`` / ``weight_v`` the ``spectral`` collection's ``u`` / ``v``.
  """
  sd, _ = read_state_dict(path)
  sd = discriminator_state_dict(sd) or strip_prefix(sd, "discriminator.")
  return discriminator_variables_from_state_dict(sd, num_windows, channels, hidden)


def has_torch_discriminator(path: str) -> bool:
  """Whether a checkpoint file also holds discriminator weights (Lightning training files)."""
  if os.path.isdir(path):
    return False
  sd, _ = read_state_dict(path)
  return discriminator_state_dict(sd) is not None

