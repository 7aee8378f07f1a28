"""Development tooling shared by tests, benchmarks and scripts; never part of the product.

Not in the wheel (pyproject installs `medcast*` and `serve*` only): run from the repository
root (`python -m scripts.s3`, `python -m bench.serve`; pytest puts the root on `sys.path`).
`ports` (free loopback ports), `service` (start `python -m serve`, wait until ready, stop),
`s3server` (a local SeaweedFS S3 server), `tiny_model` (a small served model built as the
pipeline builds one) and `factories` (generated tables with the real datasets' schemas).
"""
