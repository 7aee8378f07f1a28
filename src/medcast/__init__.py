"""medcast: reproducible medical regression."""

import os
from pathlib import Path

# Same bytes on another x86-64 machine. OpenBLAS picks its kernels by CPU when NumPy or SciPy
# loads it (SkylakeX on an AVX-512 EPYC, Haswell or Zen elsewhere), and the kernels round in
# another order: measured, the CV scores then moved in their 15th digit and seven outputs of
# dvc.lock changed hash. The Haswell (AVX2 + FMA) kernels run on every x86-64 CPU that has
# those two flags, so they are pinned there (read at library load: this runs before any stage
# imports NumPy). A user's own OPENBLAS_CORETYPE wins.
_CPUINFO = Path("/proc/cpuinfo")


def _has_avx2_fma() -> bool:
    try:
        for line in _CPUINFO.read_text().splitlines():
            if line.startswith("flags"):
                return {"avx2", "fma"} <= set(line.split())
    except OSError:
        pass
    return False


if _has_avx2_fma():
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
