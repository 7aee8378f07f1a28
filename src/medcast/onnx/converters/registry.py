"""Register every converter of this package with skl2onnx, on the first export (skl2onnx keeps
them in a process-wide registry, so not at import)."""

from __future__ import annotations

from medcast.onnx.converters import (
    binarizer,
    hist_boosting,
    imputer,
    indicator,
    knn,
    mlp,
    spline,
    target,
)

MODULES = (target, spline, mlp, knn, binarizer, imputer, indicator, hist_boosting)
_registered = False


def register() -> None:
    """Register every converter here (idempotent)."""
    global _registered
    if _registered:
        return
    for module in MODULES:
        module.register()
    _registered = True
