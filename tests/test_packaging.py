"""A built wheel carries what a non-editable install needs: the fused kernels' C++ source.

The wheel is built from this checkout and installed into a scratch folder; a fresh
interpreter that imports alcsp from there (dependencies from this environment) must load the
fused backend, not fall back to the pure-PyTorch path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_ships_the_fused_kernels_and_uses_them(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("alcsp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "alcsp/potential/_fused.cpp" in names

    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import alcsp, alcsp.potential.fused as f; "
        "print(alcsp.__file__); print(f.unavailable_reason()); print(f.available())"
    )
    env = {**os.environ, "ALCSP_CACHE_DIR": str(tmp_path / "cache"), "PYTHONNOUSERSITE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", probe, str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    path, reason, ok = out.stdout.strip().splitlines()[-3:]
    assert Path(path).is_relative_to(target), f"imported the checkout, not the wheel: {path}"
    assert ok == "True", f"fused kernels unavailable from the wheel: {reason}"
