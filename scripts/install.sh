#!/usr/bin/env bash
# Creates .venv in the checkout (if missing) and installs the pinned requirements. Run
# things from the checkout root (`python -m apollo_jax...`); re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
# Optional system packages for the soundfont demo corpus and the held-out set (FluidSynth,
# two GM soundfonts, TiMidity++ with freepats). Without them the demo corpus uses the
# built-in synthesiser; nothing here may fail the install.
sf_ready() {
  command -v fluidsynth >/dev/null && command -v timidity >/dev/null &&
    [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] && [ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] &&
    [ -f /etc/timidity/freepats.cfg ]
}
if ! sf_ready; then
  sudo=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  fi
  if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; } &&
      { $sudo apt-get install -y -qq --no-install-recommends fluidsynth fluid-soundfont-gm \
          timgm6mb-soundfont timidity freepats >/dev/null 2>&1 ||
        { $sudo apt-get update -qq >/dev/null 2>&1 &&
          $sudo apt-get install -y -qq --no-install-recommends fluidsynth fluid-soundfont-gm \
            timgm6mb-soundfont timidity freepats >/dev/null 2>&1; }; }; then
    echo "installed fluidsynth, fluid-soundfont-gm, timgm6mb-soundfont, timidity, freepats"
  fi
  if ! command -v fluidsynth >/dev/null || [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then
    echo "note: no fluidsynth + FluidR3_GM.sf2 (apt-get unavailable or failed): the demo corpus will use the built-in synthesiser"
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# Make the checkout importable from the venv (an editable install without build tools).
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$PWD" > "$site/apollo_jax_checkout.pth"
