#!/usr/bin/env bash
# Build the separate Python environment of naslung's MONAI Label app: monailabel 0.8.5 with torch 2.14.1.
#
#   bash bundles/monailabel/make_env.sh [VENV_DIR]   (default: $NASLUNG_MONAILABEL_VENV, else .venv-monailabel at
#                                                    the root of a repository checkout, which git ignores)
#
# monailabel pins NumPy 1.x and pulls a CUDA build of torch (it runs on CPU), so it never goes into naslung's own
# environment. The script is idempotent: a venv that holds the completion marker written by a finished build of the
# same package set is reused; a half-built one (no or stale marker) is removed and built again. Everything comes
# from the configured package index (the local wheel store holds torch 2.14.1 and torchvision 0.29.1).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-${NASLUNG_MONAILABEL_VENV:-}}"
if [ -z "$venv" ]; then
  if [ ! -f "$repo/pyproject.toml" ]; then
    echo "usage: make_env.sh VENV_DIR (or set NASLUNG_MONAILABEL_VENV)" >&2
    exit 2
  fi
  venv="$repo/.venv-monailabel"  # git-ignored in the repository
fi
python="${NASLUNG_MONAILABEL_PYTHON:-$(command -v python3.11 || command -v python3)}"
marker="$venv/.naslung-monailabel-env"

# What the venv holds; the marker records it, so changing this list rebuilds the venv.
torch_pins=("torch==2.14.1" "torchvision==0.29.1")
app_pins=("monailabel==0.8.5" "monai==1.6.1" "nibabel>=5.0" "SimpleITK>=2.3" "pytorch-ignite>=0.4.11" "scipy")
# monailabel imports pydicom-seg 0.4.1 at start-up, which needs pydicom 2 (pydicom 3 dropped
# pydicom._storage_sopclass_uids); the newest dicomweb-client and pynetdicom need pydicom 3, so cap them too.
app_pins+=("pydicom>=2.4.4,<3" "pynetdicom>=2.0.2,<3" "dicomweb-client[gcp]>=0.59.1,<0.60")
wanted="python=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ${torch_pins[*]} ${app_pins[*]}"

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ] && [ -x "$venv/bin/monailabel" ]; then
  echo "make_env: $venv is complete ($wanted); reusing it"
  exit 0
fi
if [ -e "$venv" ]; then
  if [ -f "$venv/pyvenv.cfg" ] || [ -z "$(ls -A "$venv")" ]; then
    echo "make_env: $venv is incomplete or out of date; rebuilding it"
    rm -rf "$venv"
  else
    echo "make_env: $venv exists and is not a virtual environment; choose another folder" >&2
    exit 2
  fi
fi

started=$SECONDS
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade "pip>=23" "setuptools>=68" wheel
"${pip[@]}" "${torch_pins[@]}"
# monailabel 0.8.5 requires sam2 (Segment Anything 2), an sdist whose build needs torch: build it against the torch
# just installed (no build isolation, which would fetch a second torch) and without its CUDA extension.
SAM2_BUILD_CUDA=0 "${pip[@]}" --no-build-isolation "${torch_pins[@]}" "${app_pins[@]}"
"$venv/bin/python" - <<'EOF'
import importlib
for name in ("monailabel", "monai", "torch", "torchvision", "numpy", "nibabel", "SimpleITK", "ignite", "scipy"):
    module = importlib.import_module(name)
    print(f"make_env: {name} {getattr(module, '__version__', '')}")
EOF
# bin/monailabel runs `python` from PATH unless MONAILABEL_PYEXE names the interpreter
MONAILABEL_PYEXE="$venv/bin/python" "$venv/bin/monailabel" --help >/dev/null
echo "$wanted" >"$marker"
echo "make_env: built $venv in $((SECONDS - started)) s ($(du -sh "$venv" | cut -f1))"
