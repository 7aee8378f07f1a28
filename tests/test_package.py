"""Importing medcast pins OpenBLAS to one kernel set, so a study gives the same bytes on another
x86-64 machine (src/medcast/__init__.py); a user's own OPENBLAS_CORETYPE wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from medcast import _has_avx2_fma

# What OpenBLAS reports once NumPy and SciPy have loaded it, medcast imported first (as a stage).
PROBE = ("import json, medcast, numpy, scipy.linalg; from threadpoolctl import threadpool_info; "
         "print(json.dumps(sorted({i['architecture'] for i in threadpool_info() "
         "if i['internal_api'] == 'openblas'})))")


def kernels(**env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


@pytest.mark.skipif(not _has_avx2_fma(), reason="this CPU lacks AVX2/FMA: OpenBLAS picks its own")
def test_numpy_and_scipy_run_the_haswell_kernels_on_any_avx2_cpu():
    assert kernels() == ["Haswell"]


def test_a_users_own_coretype_wins():
    assert kernels(OPENBLAS_CORETYPE="Sandybridge") == ["Sandybridge"]
