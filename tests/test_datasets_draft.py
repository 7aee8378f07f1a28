"""`python -m medcast.datasets init`: a table it cannot read as asked (another encoding, decimal
commas) stops with one message holding the init command that reads it, and that command works;
the draft's summary says what preprocess refuses and which step comes next."""

from __future__ import annotations

import shlex

import pytest
import yaml

from medcast.datasets.__main__ import main

PREFIX = "python -m medcast.datasets "


def _table(decimal=".", delimiter=",", n=30):
    rows = ["record id,ward,weight,y".replace(",", delimiter)]
    for i in range(n):
        weight = f"{60 + i}{decimal}{i % 10}5"
        rows.append(delimiter.join([f"p{i}", ("Hôtel-Dieu", "Cochin")[i % 2], weight,
                                    f"{i * 1.5 + 3:.2f}".replace(".", decimal)]))
    return "\n".join(rows) + "\n"


def _init(argv, capsys):
    """Run init in-process: (exit status, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _suggested(stderr):
    """The command between the last backticks of the message, as arguments of main()."""
    command = stderr.strip().rsplit("`", 2)[-2]
    assert command.startswith(PREFIX), stderr
    return shlex.split(command[len(PREFIX):])


def _refused_then_drafted_by_the_fix(tmp_path, capsys, message):
    """`init` on export.csv exits 2 with exactly `message`; the command it suggests then drafts
    conf/dataset/t.yaml, returned."""
    code, _, err = _init(["init", "export.csv", "--name", "t", "--target", "y", "--id",
                          "record id"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == message
    code, _, err = _init(_suggested(err), capsys)
    assert code == 0, err
    return yaml.safe_load((tmp_path / "conf/dataset/t.yaml").read_text())


def test_a_latin1_table_names_init_with_its_encoding_and_that_command_drafts_it(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "export.csv").write_bytes(_table().encode("latin-1"))
    drafted = _refused_then_drafted_by_the_fix(tmp_path, capsys, (
        "error: export.csv: not utf-8 text (byte 0xf4: invalid continuation byte); draft again "
        "with its encoding: `python -m medcast.datasets init export.csv --name t --target y "
        "--id 'record id' --encoding latin-1`"))
    assert drafted["source"]["encoding"] == "latin-1"
    assert drafted["columns"]["ward"]["categories"] == ["Cochin", "Hôtel-Dieu"]


def test_decimal_commas_name_init_with_decimal_comma_and_that_command_drafts_numbers(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "export.csv").write_text(_table(decimal=",", delimiter=";"))
    drafted = _refused_then_drafted_by_the_fix(tmp_path, capsys, (
        "error: export.csv: columns ['weight', 'y'] hold numbers with a decimal comma (e.g. "
        "'60,05'); draft again with `--decimal ,`: `python -m medcast.datasets init export.csv "
        "--name t --target y --id 'record id' --decimal ,`"))
    assert drafted["source"]["decimal"] == "," and drafted["source"]["delimiter"] == ";"
    assert drafted["columns"]["weight"]["type"] == "float"
    assert drafted["columns"]["y"] == {"type": "float", "min": 0, "max": 50.9}


def test_the_summary_says_what_preprocess_refuses_and_the_steps_to_a_run(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "export.csv").write_text(_table())
    code, out, err = _init(["init", "export.csv", "--name", "t", "--target", "y", "--id",
                            "record id"], capsys)
    assert code == 0, err
    assert out.splitlines()[-4:] == [
        "wrote conf/dataset/t.yaml: review the lines marked REVIEW; preprocess refuses the "
        "file while a value holds one (target_unit)",
        "next: make data NAME=t FILE=export.csv   # copies it to data/raw/t/export.csv and "
        "tracks it with DVC",
        "then: python -m medcast.datasets use t   # the dataset of every `dvc exp run`, -S or not",
        "then: git add conf/dataset/t.yaml data/raw/t conf/params/config.yaml params.yaml && "
        "git commit -m 'Dataset t' && dvc exp run",
    ]
    assert 'target_unit: "REVIEW: unit of the target"' in (
        tmp_path / "conf/dataset/t.yaml").read_text()


@pytest.mark.parametrize("values", [["12,5", "7", "abc", "n/a"], ["1,2,3", "4"]])
def test_text_with_commas_is_not_taken_for_decimal_commas(tmp_path, monkeypatch, capsys, values):
    monkeypatch.chdir(tmp_path)
    rows = [f"{values[i % len(values)]};{i}" for i in range(30)]
    (tmp_path / "export.csv").write_text("note;y\n" + "\n".join(rows) + "\n")
    code, _, err = _init(["init", "export.csv", "--name", "t", "--target", "y"], capsys)
    assert code == 0, err
