"""medcast.plot's figures and the raw table's provenance for the TRIPOD checklist."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from medcast import calibration
from medcast.plot import plot_calibration, plot_instability, raw_source
from tests.conftest import tiny


def test_calibration_and_instability_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.normal(100, 20, 300)
    y = pred + rng.normal(0, 10, 300)
    plot_calibration(calibration.decile_table(y, pred), calibration.smooth_curve(y, pred), 0.98,
                     "charges", tmp_path / "c.png")
    frame = pd.DataFrame({"patient": np.repeat(np.arange(10), 5), "predicted": np.repeat(pred[:10], 5),
                          "bootstrap": np.repeat(pred[:10], 5) + rng.normal(0, 1, 50)})
    plot_instability(frame, 0.8, "charges", tmp_path / "i.png")
    for name in ("c.png", "i.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_raw_source_names_the_file_and_its_md5_or_the_bundled_table(tmp_path, monkeypatch):
    diabetes = tiny().dataset
    assert "scikit-learn" in raw_source(diabetes) and "'diabetes'" in raw_source(diabetes)
    insurance = tiny("dataset=insurance").dataset
    monkeypatch.chdir(tmp_path)
    path = tmp_path / insurance.raw
    path.parent.mkdir(parents=True)
    content = b"age,sex\n1,m\n"
    path.write_bytes(content)
    assert raw_source(insurance) == f"`{insurance.raw}` (md5 {hashlib.md5(content).hexdigest()})"
