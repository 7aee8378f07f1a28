"""Converters skl2onnx lacks or gets wrong, one module each (registry.py registers them all on
the first export). Each module says which upstream bug it works around and when it can be
deleted; tests/test_onnx_converters.py fails once upstream fixes one."""
