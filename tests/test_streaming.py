"""Streaming (hop by hop) restoration equals the offline generator."""

import dataclasses
import functools
import io

import jax
import numpy as np
import pytest

from apollo_jax import Apollo, ApolloConfig, audio, init_params, spectral
from apollo_jax.inference import streaming as st
from tests.conftest import TINY

TOL = 1e-5  # issue 7: max abs diff after the latency, float32.
CAUSAL = dataclasses.replace(TINY, causal=True)
NONCAUSAL = dataclasses.replace(CAUSAL, causal=False)
HOP = CAUSAL.hop


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  return jax.jit(lambda p, x: Apollo(cfg).apply({"params": p}, x))


def offline(cfg, params, x):
  return np.asarray(_forward(cfg)(params, x))


def assert_matches(got, want):
  """Max abs diff <= TOL, except where the offline inverse STFT is ill-conditioned.

  The last ``samples % hop`` samples are covered by one frame only, and the offline model
  divides them by its squared window, down to 1.6e-10 at the very end: rounding there is
  amplified up to 1e5 times in the offline output itself. Where that envelope is below
  1e-3 (at most the last ~50 samples, 1.1 ms) the tolerance is relative to those samples.
  """
  assert got.shape == want.shape
  err = np.abs(got - want)
  r = want.shape[-1] % HOP
  env = spectral.window_envelope(CAUSAL.n_fft, HOP, 1)[HOP:HOP + r]
  ill = np.zeros(want.shape[-1], bool)
  ill[want.shape[-1] - r:] = env < 1e-3
  assert err[..., ~ill].max() <= TOL
  if ill.any():
    assert err[..., ill].max() <= TOL * max(1.0, np.abs(want[..., ill]).max())


def signal(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def params():
  return jax.device_put(init_params(CAUSAL, jax.random.PRNGKey(3)))


def test_latency_numbers():
  assert st.lookahead_frames(CAUSAL) == 0
  assert (st.delay_samples(CAUSAL), st.latency_samples(CAUSAL)) == (441, 882)
  assert st.latency_ms(CAUSAL) == pytest.approx(20.0)
  paper = ApolloConfig()
  assert st.lookahead_frames(paper) == 54  # 6 layers x 3 units x 3 frames
  assert st.latency_ms(paper) == pytest.approx(560.0)
  assert st.latency_ms(ApolloConfig(feature_dim=64, num_layers=2)) == pytest.approx(200.0)


@pytest.mark.slow
def test_causal_model_ignores_the_future(params):
  # Offline causal model: changing samples from n0 on leaves outputs before n0 - 2 hops alone.
  x = signal((1, 1, 12 * HOP))
  y = x.copy()
  n0 = 7 * HOP + 100
  y[..., n0:] = signal((1, 1, x.shape[-1] - n0), seed=1)
  a, b = offline(CAUSAL, params, x), offline(CAUSAL, params, y)
  keep = (n0 // HOP - 1) * HOP
  assert np.array_equal(a[..., :keep], b[..., :keep])
  assert np.abs(a[..., n0:] - b[..., n0:]).max() > 1e-3
  # The published (non-causal) convolutions do look ahead.
  a, b = offline(NONCAUSAL, params, x), offline(NONCAUSAL, params, y)
  assert np.abs(a[..., :keep] - b[..., :keep]).max() > 1e-4


@pytest.mark.slow
def test_causal_stream_equals_offline_stereo(params):
  x = signal((2, 2, 9 * HOP + 123))  # odd length, batch of 2 stereo streams
  want = offline(CAUSAL, params, x)
  state = st.init_state(CAUSAL, 2, 2)
  outs = []
  for s in range(9):
    state, out = st.step(params, state, x[..., s * HOP:(s + 1) * HOP])
    assert out.shape == (2, 2, HOP)
    outs.append(np.asarray(out))
  stepped = np.concatenate(outs, axis=-1)
  # Before the end is known every hop is already final: offline output delayed by one hop.
  assert np.all(stepped[..., :HOP] == 0)
  assert np.abs(stepped[..., HOP:] - want[..., :8 * HOP]).max() <= TOL
  rest = np.asarray(st.finish(params, state, x[..., 9 * HOP:]))
  assert rest.shape == (2, 2, HOP + 123)
  assert_matches(np.concatenate([stepped, rest], axis=-1)[..., HOP:], want)


@pytest.mark.parametrize("cfg,lengths", [
    (CAUSAL, (HOP + 1, 3 * HOP, 5 * HOP + HOP - 1)),
    (NONCAUSAL, (HOP + 1, 12 * HOP + HOP - 1)),  # shorter and longer than the lookahead
], ids=["causal", "lookahead"])
@pytest.mark.slow
def test_mono_odd_lengths_and_reset(params, cfg, lengths):
  # One state reused through reset(): lengths from the shortest allowed to whole hops.
  state = st.init_state(cfg, 1, 1)
  for i, n in enumerate(lengths):
    x = signal((1, 1, n), seed=10 + i)
    outs = []
    for s in range(n // HOP):
      state, out = st.step(params, state, x[..., s * HOP:(s + 1) * HOP])
      outs.append(np.asarray(out))
    outs.append(np.asarray(st.finish(params, state, x[..., n // HOP * HOP:])))
    got = np.concatenate(outs, axis=-1)
    delay = st.delay_samples(cfg)
    assert got.shape[-1] == n + delay and np.all(got[..., :delay] == 0)
    assert_matches(got[..., delay:], offline(cfg, params, x))
    state = st.reset(state)


@pytest.mark.slow
def test_published_weights_stream_in_lookahead_mode(parity):
  from apollo_jax.checkpoints.published import load_torch_generator
  cfg, p = load_torch_generator(str(parity / "apollo_small.safetensors"))
  x = np.load(parity / "input.npy")[..., :20 * cfg.hop + 5]
  got = st.stream_array(cfg, p, x)
  assert st.lookahead_frames(cfg) == 18
  assert_matches(got, offline(cfg, p, x))


def test_stream_file_round_trip(params, tmp_path):
  x = signal((2, 9 * HOP + 123)) * 0.5
  audio.save(str(tmp_path / "in.wav"), x, 44100)
  stats = st.stream_file(CAUSAL, params, str(tmp_path / "in.wav"), str(tmp_path / "out.wav"))
  y, rate = audio.load(str(tmp_path / "out.wav"))
  assert rate == 44100 and y.shape == x.shape and stats["hops"] == 10
  assert_matches(y, offline(CAUSAL, params, x[None])[0])


def test_command_line_on_files(params, tmp_path, capsys):
  from apollo_jax.checkpoints import save_torch_generator
  from apollo_jax.cli import stream
  save_torch_generator(CAUSAL, params, str(tmp_path / "g.safetensors"))
  x = signal((2, 9 * HOP + 123), seed=7) * 0.5
  audio.save(str(tmp_path / "in.wav"), x, 44100)
  stream.main([str(tmp_path / "in.wav"), str(tmp_path / "out.wav"),
               "--checkpoint", str(tmp_path / "g.safetensors"), "--causal"])
  assert "latency 882 samples = 20 ms" in capsys.readouterr().err
  y, _ = audio.load(str(tmp_path / "out.wav"))
  assert_matches(y, offline(CAUSAL, params, x[None])[0])


@pytest.mark.parametrize("aligned", [True, False])
def test_stream_stdio_raw_pcm(params, aligned):
  x = signal((1, 2, 9 * HOP + 123), seed=5)  # same shape as the file test: no recompiling
  pcm = io.BytesIO(np.ascontiguousarray(x[0].T, "<f4").tobytes())
  out = io.BytesIO()
  n = st.stream_stdio(CAUSAL, params, 2, pcm, out, aligned=aligned)
  y = np.frombuffer(out.getvalue(), "<f4").reshape(-1, 2).T
  assert n == x.shape[-1]
  if not aligned:
    assert np.all(y[:, :HOP] == 0)
    y = y[:, HOP:]
  assert_matches(y, offline(CAUSAL, params, x)[0])


def test_bad_inputs_are_clear(params):
  state = st.init_state(CAUSAL, 1, 2)
  with pytest.raises(ValueError, match=r"hop_block must be \(batch, channels, samples\) = \(1, 2, 441\)"):
    st.step(params, state, np.zeros((1, 2, 440), np.float32))
  with pytest.raises(ValueError, match="more than 441 samples"):
    st.finish(params, state, np.zeros((1, 2, 300), np.float32))
  with pytest.raises(ValueError, match="fewer than hop=441"):
    st.finish(params, state, np.zeros((1, 2, 441), np.float32))
  with pytest.raises(ValueError, match="inside a sample frame"):
    st.stream_stdio(CAUSAL, params, 2, io.BytesIO(b"\0" * 6), io.BytesIO())


@pytest.mark.slow
def test_residual_causal_model_streams_like_offline():
  cfg = dataclasses.replace(CAUSAL, residual=True)
  params = init_params(cfg, jax.random.PRNGKey(7))
  # Perturb the zero-initialised output layer so the network part matters.
  params = jax.tree.map(lambda a: a + 0.01, params)
  x = np.random.default_rng(7).standard_normal((1, 1, 6 * HOP)).astype(np.float32) * 0.1
  offline = np.asarray(Apollo(cfg).apply({"params": params}, x))
  online = np.asarray(st.stream_array(cfg, params, x))
  np.testing.assert_allclose(online, offline, atol=1e-5)
  with pytest.raises(ValueError, match="causal=True"):
    st.init_state(dataclasses.replace(cfg, causal=False), 1, 1)


def test_restore_cli_stream_flag(params, tmp_path, capsys):
  from apollo_jax.cli import restore
  from apollo_jax.checkpoints.published import save_torch_generator
  save_torch_generator(CAUSAL, params, str(tmp_path / "g.safetensors"))  # records causal=True
  x = signal((2, 9 * HOP + 123), seed=7) * 0.5
  audio.save(str(tmp_path / "in.wav"), x, 44100)
  out = str(tmp_path / "out.wav")
  assert restore.main([str(tmp_path / "in.wav"), "-o", out, "--stream",
                       "--checkpoint", str(tmp_path / "g.safetensors")]) == 0
  assert "latency 882 samples = 20 ms" in capsys.readouterr().err
  y, _ = audio.load(out)
  assert_matches(y, offline(CAUSAL, params, x[None])[0])
  # A second run refuses to overwrite; two inputs are refused.
  assert restore.main([str(tmp_path / "in.wav"), "-o", out, "--stream", "--checkpoint", "x"]) == 2
  assert restore.main(["a.wav", "b.wav", "-o", "o", "--stream", "--checkpoint", "x"]) == 2
