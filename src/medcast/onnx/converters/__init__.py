"""Converters skl2onnx lacks or gets wrong, one module each, registered on the first export
(skl2onnx keeps them in a process-wide registry, so not at import). Each module says which
upstream bug it works around and when it can be deleted."""

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
