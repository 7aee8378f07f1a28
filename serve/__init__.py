"""medcast's prediction service: Litestar + ONNX Runtime, one verified model, a prediction log.

`create_app(settings)` lives in `serve.app`; `python -m serve` runs it with uvicorn. Nothing is
imported or configured here, so `import serve` stays cheap and side-effect free.
"""
