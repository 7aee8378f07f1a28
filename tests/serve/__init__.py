"""Tests of the prediction service, one module per module of serve/ (tests/serve/test_<name>.py
covers serve/<name>.py; test_main.py covers serve/__main__.py)."""
