"""ONNX: a fitted medcast pipeline as one graph from raw features to `prediction`.

* `contract` — the graph's inputs and output, and how a feed is built (NumPy only: the service
  imports it);
* `export` — to_onnx (scikit-learn/Keras → ONNX), saving, loading and checking a graph;
* `bounds` — the conformal interval's `lower`/`upper` outputs added to a graph, and how a
  bound's difference from the pipeline's is measured;
* `runtime` — ONNX Runtime sessions and feeds from a DataFrame, in batches;
* `parity` — ONNX Runtime against the native pipeline, row by row;
* `converters` — one module per converter skl2onnx lacks or gets wrong, each saying when it can
  be deleted (tests/test_onnx_converters.py checks that the upstream bug is still there).

Nothing heavy is imported here.
"""
