"""Every ``train.py`` command line in README.md parses and builds its configs.

The commands are read from README.md itself (continuation lines joined), their flags are
parsed by train.py's own flag definitions, and the model / train / data configs are built
exactly as the training loop builds them. Nothing is trained.
"""

import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

_PROBE = r"""
import sys
sys.argv = ["train.py"] + sys.argv[1:]
sys.path.insert(0, {repo!r})
import train  # defines the flags
from absl import flags
from apollo_jax.training.loop import model_config, train_config
flags.FLAGS(sys.argv)
config = flags.FLAGS.config
model_config(config), train_config(config)
print("dirs", tuple(config.data.train_dirs), tuple(config.data.val_dirs))
"""


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
  probe = tmp_path / "probe.py"
  probe.write_text(_PROBE.format(repo=str(REPO)))
  for args in commands:
    args = [a.replace("configs/", str(REPO / "configs") + "/") for a in args]
    out = subprocess.run([sys.executable, str(probe), *args], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, f"{args}:\n{out.stderr[-3000:]}"
    if "--config.data.train_dirs=('/data/musdb18hq',)" in args:
      assert "dirs ('/data/musdb18hq',) ('/data/musdb18hq',)" in out.stdout


@pytest.mark.slow
def test_data_dirs_accept_tuple_list_and_string(tmp_path):
  """README's tuple form, the list form and a bare path all give a tuple of folders."""
  probe = tmp_path / "probe.py"
  probe.write_text(_PROBE.format(repo=str(REPO)))
  config = str(REPO / "configs/apollo.py")
  for value in ("('/data',)", "['/data']", "/data"):
    out = subprocess.run([sys.executable, str(probe), "--config", config, "--workdir", "w",
                          f"--config.data.train_dirs={value}"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "dirs ('/data',) ()" in out.stdout
