"""train.py end to end on a tiny config: resume after kill -9, corrupted checkpoints, two
processes with jax.distributed, and the config file."""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TINY as TINY_MODEL, TINY_WINDOWS

TINY = [
    *(f"--config.model.{k}={getattr(TINY_MODEL, k)}"
      for k in ("feature_dim", "num_layers", "num_heads")),
    "--config.train.windows=(" + ",".join(map(str, TINY_WINDOWS)) + ")",
    "--config.data.segment_seconds=0.25",
    "--config.data.demo_tracks=3", "--config.data.demo_seconds=3.0",
    "--config.data.demo_val_tracks=1", "--config.data.val_items=2",
    "--config.data.val_seconds=1.0", "--config.data.bitrates=(32,64)",
    "--config.global_batch_size=2", "--config.log_every=1", "--config.val_every=0",
    "--config.checkpoint_every=2", "--config.val_visqol_items=0",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """One demo corpus for every run of this module."""
  return tmp_path_factory.mktemp("cache")


def _cmd(workdir, cache, steps, *extra):
  return [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/apollo.py:demo"),
          "--workdir", str(workdir), f"--config.data.cache_dir={cache}",
          f"--config.num_steps={steps}", *TINY, *extra]


def _env(own_compile_cache=False, compile_cache=None):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  if own_compile_cache:  # train.py's default: WORKDIR/compile_cache (not the session's)
    env.pop("APOLLO_JAX_COMPILE_CACHE", None)
  elif compile_cache:
    env["APOLLO_JAX_COMPILE_CACHE"] = str(compile_cache)
  return env


def _run(workdir, cache, steps, *extra, check=True, own_compile_cache=False, compile_cache=None):
  env = _env(own_compile_cache, compile_cache)
  out = subprocess.run(_cmd(workdir, cache, steps, *extra), capture_output=True, text=True,
                       env=env, timeout=900)
  if check and out.returncode != 0:
    raise AssertionError(f"train.py failed ({out.returncode}):\n{out.stderr[-4000:]}")
  return out


def _losses(workdir):
  rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  keys = ("loss_d", "loss_g", "loss_g_rec", "loss_g_adv", "loss_g_fm", "grad_norm_g", "grad_norm_d")
  return {r["step"]: tuple(r[k] for k in keys) for r in rows if "loss_g" in r}


def _steps(workdir):
  last = pathlib.Path(workdir) / "checkpoints" / "last"
  return sorted(int(p.name) for p in last.iterdir() if p.name.isdigit()) if last.exists() else []


@pytest.fixture(scope="module")
def killed(cache, tmp_path_factory):
  """A 6-step run with train.py's own compile cache (WORKDIR/compile_cache), killed with
  SIGKILL after its step-4 checkpoint: (workdir, the steps it had checkpointed, the names
  in its compile cache).

  It is the module's first run and compiles the step; the other single-process runs use its
  compile cache folder (``step_cache``) and load the step instead of compiling it again.
  Copying the entries to another folder would not do: JAX's cache key holds the folder's
  path (its XLA autotune cache option), so a copy is never hit."""
  workdir = tmp_path_factory.mktemp("killed")
  proc = subprocess.Popen(_cmd(workdir, cache, 6), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=_env(own_compile_cache=True))
  try:
    deadline = time.time() + 600
    while 4 not in _steps(workdir) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait()
  own = sorted(p.name for p in (workdir / "compile_cache").iterdir())
  return workdir, _steps(workdir), own


@pytest.fixture(scope="module")
def step_cache(killed):
  """The killed run's compile cache folder, which holds this module's train step."""
  return killed[0] / "compile_cache"


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory, step_cache):
  """An uninterrupted 6-step run."""
  workdir = tmp_path_factory.mktemp("reference")
  _run(workdir, cache, 6, compile_cache=step_cache)
  return workdir


@pytest.mark.slow
def test_uninterrupted_run_writes_everything(reference):
  assert sorted(_losses(reference)) == [1, 2, 3, 4, 5, 6]
  assert _steps(reference)[-1] == 6
  assert (reference / "config.json").exists()
  assert any((reference / "tensorboard").iterdir())


@pytest.mark.slow
def test_time_fields_count_completed_steps_without_compilation(reference):
  rows = [json.loads(l) for l in (reference / "metrics.jsonl").read_text().splitlines()]
  rows = [r for r in rows if "loss_g" in r]
  # Compilation is reported once, on the first row, and never mixed into a step rate.
  assert rows[0]["time/compile_s"] > 0 and "time/step_s" not in rows[0]
  assert all("time/compile_s" not in r for r in rows[1:])
  timed = [r for r in rows if "time/step_s" in r]
  # log_every=1, checkpoint_every=2: the interval after each checkpoint write is left out.
  assert [r["step"] for r in timed] == [2, 4, 6]
  for r in timed:
    assert 0 < r["time/step_s"] < rows[0]["time/compile_s"]
    # 2 items of 0.25 s per step.
    assert r["time/audio_s_per_s"] == pytest.approx(0.5 / r["time/step_s"], rel=1e-9)
    assert 0 <= r["time/data_wait_fraction"] <= 1


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(reference, cache, killed):
  workdir, steps, own = killed
  assert max(steps) < 6
  # The killed run cached its compiled step in the run's folder; the resume loads it.
  assert [name for name in own if "step" in name]
  _run(workdir, cache, 6, own_compile_cache=True)
  # Bitwise: same XLA program, same restored state and data position.
  assert _losses(workdir) == _losses(reference)


@pytest.mark.slow
def test_truncated_checkpoint_falls_back_to_previous(reference, cache, step_cache, tmp_path):
  shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
  last = tmp_path / "checkpoints" / "last" / "6" / "state"
  for f in last.rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  out = _run(tmp_path, cache, 6, compile_cache=step_cache)
  assert "unreadable" in out.stderr
  assert _losses(tmp_path) == _losses(reference)


@pytest.mark.slow
def test_item2_all_checkpoints_unreadable_refuses_then_restarts_cleanly(reference, cache, step_cache,
                                                                         tmp_path):
  shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
  for step in _steps(tmp_path):
    for f in (tmp_path / "checkpoints" / "last" / str(step) / "state").rglob("*"):
      if f.is_file() and f.stat().st_size > 0:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  metrics = (tmp_path / "metrics.jsonl").read_text()
  for _ in range(2):  # every rerun says the same, and changes nothing
    out = _run(tmp_path, cache, 8, check=False, compile_cache=step_cache)
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "StepAlreadyExistsError" not in out.stderr
    assert f"delete {tmp_path / 'checkpoints'}" in errors[0], errors
    assert str(tmp_path / "metrics.jsonl") in errors[0]
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
  # Doing what it says, but keeping metrics.jsonl: a clean start, no duplicated rows.
  shutil.rmtree(tmp_path / "checkpoints")
  _run(tmp_path, cache, 6, compile_cache=step_cache)
  steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]
  assert _losses(tmp_path) == _losses(reference)


@pytest.mark.slow
def test_two_processes_with_jax_distributed(cache, tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen(
      _cmd(tmp_path, cache, 2, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
           f"--process_id={i}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=env) for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  assert _steps(tmp_path) == [2]
  data = tmp_path / "checkpoints" / "last" / "2" / "data"
  assert len(list(data.iterdir())) >= 2  # One iterator position per process.
  assert sorted(_losses(tmp_path)) == [1, 2]


def test_config_variants_build():
  sys.path.insert(0, str(REPO))
  from configs import apollo
  from apollo_jax.training.loop import model_config, train_config
  for variant in ("paper", "demo", "demo_long", "causal", "finetune"):
    c = apollo.get_config(variant)
    model_config(c), train_config(c)
  assert model_config(apollo.get_config("causal")).causal
  with pytest.raises(ValueError, match="unknown variant"):
    apollo.get_config("nope")


def test_step_rate_leaves_out_pauses():
  from apollo_jax.training.loop import StepRate
  rate = StepRate()
  rate.waited_for_data(5.0)  # before the first completion: not part of any interval
  rate.done(100.0)           # the first step: waited for compilation, starts the clock
  assert rate.summary(3.0) == {}
  rate.waited_for_data(0.5)
  rate.done(102.0)
  rate.done(106.0)
  assert rate.summary(3.0) == {"time/step_s": 3.0, "time/audio_s_per_s": 1.0,
                               "time/data_wait_fraction": 0.5 / 6.0}
  rate.done(107.0)
  rate.pause()               # e.g. validation and a checkpoint
  rate.waited_for_data(9.0)
  rate.done(200.0)           # its interval holds the pause: left out
  rate.done(201.0)
  assert rate.summary(3.0) == {"time/step_s": 1.0, "time/audio_s_per_s": 3.0,
                               "time/data_wait_fraction": 0.0}
