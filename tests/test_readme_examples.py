"""scripts/readme_examples.py without a served model: the `how-sure` excerpt of a report that
medcast.report writes, and the filling and checking of several files at once (README and docs
pages). The `predict` block against a built model: tests/test_pipeline_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcast.report import report_markdown
from scripts.readme_examples import how_sure_excerpt, main
from tests.conftest import tiny
from tests.support.study import METRICS, TUNING, VALIDATION, board, no_signal


def report(validation: dict) -> str:
    """reports/report.md as the plot stage writes it, for the small literal study."""
    from devtools.factories import insurance_frame
    from medcast.datasets import validate
    from medcast.features import infer_schema

    p = tiny("dataset=insurance")
    schema = infer_schema(validate(insurance_frame(50, seed=0).astype(str), p.dataset), p.dataset)
    return report_markdown(schema, METRICS, board(), TUNING, {"Calibration": "figures/c.png"},
                           None, validation, "5-fold × 2")


def test_how_sure_excerpt_quotes_signal_selection_bootstrap_calibration_and_sample_size():
    text = how_sure_excerpt(report(VALIDATION))
    assert text.startswith("From `reports/report.md` (insurance → charges, selected and tuned: "
                           "`ridge`)")
    body = text.split("\n\n", 1)[1]
    assert all(line.startswith(">") for line in body.splitlines())
    for needle in ("> **Signal:** ridge predicts charges", "> **Selection:** Rule `one_se`",
                   "> **Internal validation** (200 bootstrap refits", "> | R² | 0.75 | 0.02 | 0.73 |",
                   "> **Calibration** (observed on predicted", "optimism-corrected slope 0.970",
                   "> **Stability**", "> **Sample size**", "at least 245 training rows"):
        assert needle in text, needle
    # left in the report: the criteria and subgroup tables, and everything after the section
    for absent in ("| criterion |", "Subgroups", "smoker=yes", "## Candidates", "![Calibration]"):
        assert absent not in text, absent


def test_how_sure_excerpt_of_a_run_without_signal_starts_with_the_warning():
    text = how_sure_excerpt(report(no_signal(VALIDATION)))
    assert text.split("\n\n", 1)[1].startswith("> > **No candidate beats the mean:**")


def test_how_sure_excerpt_of_a_report_without_the_section_says_what_to_run():
    with pytest.raises(RuntimeError, match="make repro"):
        how_sure_excerpt("# medcast study: diabetes → progression\n\nTarget: …\n")


def test_fills_the_block_in_every_file_that_has_it_and_check_names_the_stale_one(tmp_path: Path,
                                                                                  capsys):
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    (repo / "reports/report.md").write_text(report(VALIDATION))
    block = "<!-- readme_examples:how-sure -->\nold\n<!-- /readme_examples:how-sure -->\n"
    readme, page, other = tmp_path / "README.md", tmp_path / "trust.md", tmp_path / "other.md"
    readme.write_text(f"# t\n\n{block}after\n")
    page.write_text(f"# trust\n\n{block}")
    other.write_text("# no block here\n")
    files = [str(readme), str(page), str(other)]

    assert main(["--repo", str(repo), *files]) == 0
    excerpt = how_sure_excerpt(report(VALIDATION))
    assert readme.read_text() == (f"# t\n\n<!-- readme_examples:how-sure -->\n{excerpt}\n"
                                  "<!-- /readme_examples:how-sure -->\nafter\n")
    assert excerpt in page.read_text() and other.read_text() == "# no block here\n"
    assert main(["--repo", str(repo), "--check", *files]) == 0

    (repo / "reports/report.md").write_text(report(no_signal(VALIDATION)))  # a new run
    capsys.readouterr()
    assert main(["--repo", str(repo), "--check", *files]) == 1
    err = capsys.readouterr().err
    assert f"{readme}: the example is stale" in err and f"{page}: the example is stale" in err
    assert excerpt in page.read_text()  # --check writes nothing


def test_readme_option_is_one_more_file(tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    (repo / "reports/report.md").write_text(report(VALIDATION))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- readme_examples:how-sure -->\n<!-- /readme_examples:how-sure -->\n")
    assert main(["--repo", str(repo), "--readme", str(readme)]) == 0
    assert "> **Signal:**" in readme.read_text()


def test_a_missing_report_is_one_error(tmp_path: Path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- readme_examples:how-sure -->\n<!-- /readme_examples:how-sure -->\n")
    assert main(["--repo", str(tmp_path), str(readme)]) == 1
    assert "reports/report.md missing: run `make repro` first" in capsys.readouterr().err
