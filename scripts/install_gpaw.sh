#!/usr/bin/env bash
# Install GPAW (plane-wave DFT, the real oracle that builds here) into .venv.
# GPAW compiles C extensions against libxc and BLAS; without the compiler line in
# the siteconfig the build fails on C++ headers. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv/bin/python -c "import gpaw, gpaw_data" 2>/dev/null; then
    exit 0
fi
if ! dpkg -s libxc-dev libopenblas-dev >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq libxc-dev libopenblas-dev >/dev/null
fi
cfg="$(mktemp -d)/siteconfig.py"
cat > "$cfg" <<'PY'
mpi = False
compiler = 'g++'
libraries = ['xc', 'blas']
PY
GPAW_CONFIG="$cfg" .venv/bin/python -m pip install -q -c constraints.txt gpaw gpaw-data
