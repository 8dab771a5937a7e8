"""The fused CPU kernels of the ACNN descriptor (``_fused.cpp``), built on first use.

The C++ source ships with the package and is compiled with the system C++ compiler (g++ or
$CXX, ~2 s) into ``$ALCSP_CACHE_DIR`` (default ``~/.cache/alcsp``), keyed by a hash of the
source and flags, then loaded with ctypes. No PyTorch headers are involved, so the build is
quick and independent of how torch was installed.

``neighbour_sums`` is differentiable: its backward is a second kernel, and the backward of
that (needed when a loss on forces is back-propagated to the parameters) is a third, the
Jacobian-vector product. Second derivatives with respect to the neighbour vectors themselves
(force constants) are not provided by this path; use the pure-torch path for those.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

_SOURCE = Path(__file__).with_name("_fused.cpp")
_P = 35  # monomials of degree <= 4


class FusedUnavailable(RuntimeError):
    """The fused kernels could not be built here; the message says why."""


def _flags() -> list[str]:
    # -fno-math-errno: sqrt need not set errno, so it vectorises across slots
    flags = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC", "-std=c++17"]
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            cpu = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpu = ""
        if " avx2" in cpu and " fma" in cpu:
            flags.append("-march=x86-64-v3")
    return flags


def cache_dir() -> Path:
    return Path(os.environ.get("ALCSP_CACHE_DIR", Path.home() / ".cache" / "alcsp"))


@functools.cache
def library() -> ctypes.CDLL:
    """Build (once per source/flags/machine) and load the kernels."""
    flags = _flags()
    compiler = os.environ.get("CXX", "g++")
    key = hashlib.sha256(
        _SOURCE.read_bytes() + " ".join([compiler, *flags, platform.machine()]).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"acnn_fused_{key}.so"
    if not target.exists():
        if shutil.which(compiler) is None:
            raise FusedUnavailable(
                f"C++ compiler {compiler!r} not found; install g++ (apt-get install g++) or "
                "set CXX, or use backend='torch'."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            proc = subprocess.run(
                [compiler, *flags, "-o", str(out), str(_SOURCE)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise FusedUnavailable(f"building {_SOURCE.name} failed:\n{proc.stderr[-2000:]}")
            os.replace(out, target)  # atomic: concurrent builders never see a partial file
    lib = ctypes.CDLL(str(target))
    for suffix, ctype in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        dims = [ctypes.c_int64] * 4 + [ctypes.c_int] * 2 + [ctype] * 2
        ptrs = [ctypes.c_void_p] * 4
        getattr(lib, f"acnn_forward_{suffix}").argtypes = dims + ptrs + [ctypes.c_void_p] * 2
        getattr(lib, f"acnn_backward_{suffix}").argtypes = dims + ptrs + [ctypes.c_void_p] * 4
        getattr(lib, f"acnn_jvp_{suffix}").argtypes = dims + ptrs + [ctypes.c_void_p] * 4
    lists: list[type[ctypes._SimpleCData[Any]]] = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    lists += [ctypes.c_void_p] * 3
    geometry: list[type[ctypes._SimpleCData[Any]]] = [ctypes.c_void_p] * 2 + [ctypes.c_double] * 2
    lib.acnn_count_slots.argtypes = lists + geometry + [ctypes.c_void_p] * 2
    for suffix in ("f32", "f64"):
        getattr(lib, f"acnn_fill_slots_{suffix}").argtypes = (
            lists + geometry + [ctypes.c_int64] * 2 + [ctypes.c_double] * 2 + [ctypes.c_void_p] * 11
        )
    return lib


@functools.cache
def unavailable_reason() -> str | None:
    """Why the kernels cannot be used here, or None when they build and load. Cached per
    process, so a machine without a compiler does not retry the build on every call."""
    try:
        library()
    except (FusedUnavailable, OSError) as exc:
        return str(exc)
    return None


def available() -> bool:
    return unavailable_reason() is None


def _call(kind: str, meta: tuple, tensors: list[torch.Tensor]) -> None:
    n, t, nr, nq, kr, ka, rcr, rca = meta
    dtype = tensors[0].dtype
    suffix = {torch.float32: "f32", torch.float64: "f64"}[dtype]
    fn = getattr(library(), f"acnn_{kind}_{suffix}")
    fn(n, t, nr, nq, kr, ka, rcr, rca, *[x.data_ptr() for x in tensors])


def _meta(vec_r, vec_a, n_species, kr, ka, rcr, rca) -> tuple:
    return (vec_r.shape[0], n_species, vec_r.shape[1], vec_a.shape[1], kr, ka, rcr, rca)


class _SumsBackward(torch.autograd.Function):
    """grad_sums -> grad_vectors (linear in grad_sums); its own backward is the JVP."""

    @staticmethod
    def forward(ctx, g_r, g_a, vec_r, vec_a, sp_r, sp_a, meta):
        ctx.save_for_backward(vec_r, vec_a, sp_r, sp_a)
        ctx.meta = meta
        gv_r = torch.empty_like(vec_r)
        gv_a = torch.empty_like(vec_a)
        _call(
            "backward",
            meta,
            [vec_r, sp_r, vec_a, sp_a, g_r.contiguous(), g_a.contiguous(), gv_r, gv_a],
        )
        return gv_r, gv_a

    @staticmethod
    def backward(ctx, c_r, c_a):
        vec_r, vec_a, sp_r, sp_a = ctx.saved_tensors
        n, t, _, _, kr, ka, _, _ = ctx.meta
        d_r = vec_r.new_zeros(n, t, kr)
        d_a = vec_a.new_zeros(n, t, ka, _P)
        c_r = torch.zeros_like(vec_r) if c_r is None else c_r.contiguous()
        c_a = torch.zeros_like(vec_a) if c_a is None else c_a.contiguous()
        _call("jvp", ctx.meta, [vec_r, sp_r, vec_a, sp_a, c_r, c_a, d_r, d_a])
        return d_r, d_a, None, None, None, None, None


class _Sums(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vec_r, vec_a, sp_r, sp_a, meta):
        n, t, _, _, kr, ka, _, _ = meta
        sums_r = vec_r.new_zeros(n, t, kr)
        sums_a = vec_a.new_zeros(n, t, ka, _P)
        _call("forward", meta, [vec_r, sp_r, vec_a, sp_a, sums_r, sums_a])
        ctx.save_for_backward(vec_r, vec_a, sp_r, sp_a)
        ctx.meta = meta
        return sums_r, sums_a

    @staticmethod
    def backward(ctx, g_r, g_a):
        vec_r, vec_a, sp_r, sp_a = ctx.saved_tensors
        n, t, _, _, kr, ka, _, _ = ctx.meta
        g_r = vec_r.new_zeros(n, t, kr) if g_r is None else g_r
        g_a = vec_a.new_zeros(n, t, ka, _P) if g_a is None else g_a
        gv_r, gv_a = _SumsBackward.apply(g_r, g_a, vec_r, vec_a, sp_r, sp_a, ctx.meta)
        return gv_r, gv_a, None, None, None


def neighbour_sums(
    vec_r: torch.Tensor,
    vec_a: torch.Tensor,
    species_r: torch.Tensor,
    species_a: torch.Tensor,
    n_species: int,
    basis_radial: int,
    basis_angular: int,
    cutoff_radial: float,
    cutoff_angular: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """vec_r [N, R, 3], vec_a [N, Q, 3] (CPU) -> sums_r [N, T, Kr], sums_a [N, T, Ka, 35].

    sums_r[i, s, k] = Σ_{j∈s} f_k(r_ij);  sums_a[i, s, k, p] = Σ_{j∈s} f_k(r_ij)·mono_p(r̂_ij).
    """
    if vec_r.device.type != "cpu":
        raise FusedUnavailable("the fused kernels run on the CPU; use backend='torch' on GPUs")
    meta = _meta(
        vec_r, vec_a, n_species, basis_radial, basis_angular, cutoff_radial, cutoff_angular
    )
    return _Sums.apply(
        vec_r.contiguous(),
        vec_a.contiguous(),
        species_r.contiguous(),
        species_a.contiguous(),
        meta,
    )
