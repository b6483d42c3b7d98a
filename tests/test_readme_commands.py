"""Every ``train.py`` command line in README.md parses and builds its configs.

The commands are read from README.md itself (continuation lines joined), their flags are
parsed by train.py's own flag definitions, and the model / train / data configs are built
exactly as the training loop builds them. Nothing is trained.

One probe process imports train.py and the training loop once (most of the time), then
forks a child per command line: each child parses its flags from the untouched state a
fresh process has after those imports.
"""

import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

_PROBE = r"""
import json, os, sys, traceback
commands = sys.argv[1]
sys.argv = ["train.py"]
sys.path.insert(0, {repo!r})
import train  # defines the flags
from absl import flags
from apollo_jax.training.loop import model_config, train_config
for i, line in enumerate(open(commands)):
  sys.stdout.flush(); sys.stderr.flush()
  pid = os.fork()
  if pid == 0:  # the child: one command line
    code = 1
    try:
      sys.argv = ["train.py"] + json.loads(line)
      flags.FLAGS(sys.argv)
      config = flags.FLAGS.config
      model_config(config), train_config(config)
      print(i, "dirs", tuple(config.data.train_dirs), tuple(config.data.val_dirs))
      code = 0
    except BaseException:
      traceback.print_exc()
    finally:
      sys.stdout.flush(); sys.stderr.flush()
      os._exit(code)
  print(i, "exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def probe(tmp_path, commands: list[list[str]]) -> list[str]:
  """Runs the probe on ``commands``; returns each one's stdout line (asserting it passed)."""
  (tmp_path / "probe.py").write_text(_PROBE.format(repo=str(REPO)))
  (tmp_path / "commands.jsonl").write_text("".join(json.dumps(c) + "\n" for c in commands))
  out = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(tmp_path / "commands.jsonl")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  results = []
  for i, args in enumerate(commands):
    assert f"{i} exit 0" in lines, f"{args}:\n{out.stderr[-3000:]}"
    results.append(next(l for l in lines if l.startswith(f"{i} dirs ")))
  return results


def readme_commands(script: str) -> list[list[str]]:
  """The argument lists of every ``python <script>`` command in README.md's code blocks."""
  text = (REPO / "README.md").read_text()
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
      line = line.split(" #")[0]
      match = re.search(rf"python {re.escape(script)} (.*)", line)
      if match:
        commands.append(shlex.split(match.group(1)))
  return commands


@pytest.mark.slow
def test_readme_training_commands_parse_and_build_configs(tmp_path):
  commands = readme_commands("train.py")
  assert len(commands) >= 3, commands
  commands = [[a.replace("configs/", str(REPO / "configs") + "/") for a in args] for args in commands]
  for args, line in zip(commands, probe(tmp_path, commands)):
    if "--config.data.train_dirs=('/data/musdb18hq',)" in args:
      assert line.endswith("dirs ('/data/musdb18hq',) ('/data/musdb18hq',)"), line


@pytest.mark.slow
def test_data_dirs_accept_tuple_list_and_string(tmp_path):
  """README's tuple form, the list form and a bare path all give a tuple of folders."""
  config = str(REPO / "configs/apollo.py")
  commands = [["--config", config, "--workdir", "w", f"--config.data.train_dirs={value}"]
              for value in ("('/data',)", "['/data']", "/data")]
  for line in probe(tmp_path, commands):
    assert line.endswith("dirs ('/data',) ()"), line
