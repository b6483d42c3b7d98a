"""bench/blocks.py (a block's parts, ours against the published modules) at a tiny size."""

import importlib.util
import os
import pathlib
import sys

import pytest

BLOCKS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "blocks.py"


def load_blocks():
  if str(BLOCKS.parent) not in sys.path:  # as when run as a script: its helpers beside it
    sys.path.insert(0, str(BLOCKS.parent))
  spec = importlib.util.spec_from_file_location("bench_blocks", BLOCKS)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # not __main__: no restart for huge pages
  return module


def test_times_every_part_forward_and_backward(capsys):
  load_blocks().main(["--feature-dim", "16", "--seconds", "0.1", "--runs", "1"])
  out = capsys.readouterr().out
  assert "block input (streams, frames, bands, features) = (2, 11, 80, 16)" in out
  rows = [l for l in out.splitlines() if " ours " in l]
  assert len(rows) == 6 and all("cores)" in r for r in rows)
  for part in ("band transformer", "attention", "TCN unit"):
    assert sum(r.startswith(part) for r in rows) == 2, part


def test_chunked_attention_is_the_band_transformers():
  """The attention timed alone (``model.attention``, the band transformer's, in the step's row
  chunks) is softmax(q k^T / sqrt(d)) v over bands per head, written out here."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from apollo_jax import ApolloConfig
  from apollo_jax.model import attention
  cfg = ApolloConfig(feature_dim=16, num_heads=2, chunk_rows=4)
  qkv = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 80, 2, 3, 8)), jnp.float32)
  out = load_blocks().chunked_attention(cfg)({}, qkv)
  q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
  logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(8)
  want = jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), v)
  assert out.shape == (2, 5, 80, 2, 8)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(attention(q, k, v, "float32")[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "2"], "give --torch-ref"),
    (["--runs", "0"], "must be at least 1"),
    (["--seconds", "0.001"], "shorter than half an STFT window"),
])
def test_refuses_bad_flags(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    load_blocks().main(argv)
  assert e.value.code == 2 and message in capsys.readouterr().err


def test_cpu_steal_reads_the_cpu_line():
  load_blocks()  # puts bench/ on the path
  from _common import cpu_steal_s  # noqa: E402 (bench/ is on the path now)
  tick = os.sysconf("SC_CLK_TCK")
  assert cpu_steal_s(f"cpu  2482634 8 238834 2936057 8071 0 980 {3 * tick} 0 0\ncpu0 1 2 3\n") == 3.0
  assert cpu_steal_s("intr 1 2 3 4 5 6 7 8 9") is None
  assert cpu_steal_s("cpu 1 2 3") is None  # a kernel too old to report steal
  live = cpu_steal_s()
  assert live is None or live >= 0


def test_load_spans_add_up_and_say_when_not_reported():
  load_blocks()  # puts bench/ on the path
  from _common import Load  # noqa: E402 (bench/ is on the path now)
  spans = Load(0.1, 0.02, 1.0) + Load(0.3, 0.0, 3.0)
  assert (spans.pressure(), spans.steal()) == ("0.100", "0.005")
  assert str(spans) == "cpu pressure 0.100, steal 0.005"  # as bench/data.py prints it
  assert (Load(None, None, 2.0) + spans).steal() == "n/a"
  live = Load.since(Load.mark())
  assert live.wall_s >= 0 and live.pressure() and live.steal()
