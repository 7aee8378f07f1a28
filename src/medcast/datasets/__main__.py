"""Datasets of the study, from the command line:

    python -m medcast.datasets init FILE --name NAME --target COLUMN [--features C1,C2,…]
    python -m medcast.datasets use NAME
    python -m medcast.datasets check-source NAME TABLE

`init` drafts conf/dataset/NAME.yaml from a table, prints a summary and says what to run next;
`use` makes NAME the dataset every `dvc exp run` composes (medcast.datasets.choice);
`check-source` (run by `make data`) warns when conf/dataset/NAME.yaml reads another table than
the one just copied into data/raw/NAME/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medcast.datasets.choice import CONFIG_FILE, use
from medcast.datasets.draft import draft, render, summary
from medcast.datasets.spec import dataset_file, source_mismatch
from medcast.errors import ConfigError, cli


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m medcast.datasets",
                                 description="Datasets of this study.")
    sub = ap.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="draft conf/dataset/NAME.yaml from a CSV or Parquet table")
    init.add_argument("file", type=Path, help="the table (.csv, .tsv, .txt, .parquet)")
    init.add_argument("--name", required=True, help="the dataset's name (dvc exp run -S dataset=NAME)")
    init.add_argument("--target", required=True, help="the column to predict (numeric)")
    init.add_argument("--features", help="comma-separated feature columns (default: all others)")
    init.add_argument("--id", dest="id_column", help="a row-identifier column (not a feature)")
    init.add_argument("--delimiter", help="CSV delimiter (default: sniffed among , ; tab |)")
    init.add_argument("--decimal", default=".", help="decimal separator of numbers (default .)")
    init.add_argument("--encoding", default="utf-8",
                      help="text encoding (default utf-8; e.g. latin-1, cp1252)")
    chosen = sub.add_parser("use", help="make NAME the dataset every `dvc exp run -S` composes "
                                     "(conf/params/config.yaml), recompose params.yaml")
    chosen.add_argument("name", help="a dataset with a conf/dataset/NAME.yaml")
    placed = sub.add_parser("check-source", help="warn when conf/dataset/NAME.yaml reads another "
                            "table than TABLE (what `make data` runs after copying it)")
    placed.add_argument("name")
    placed.add_argument("table", type=Path, help="the table's path in data/raw/NAME/")
    args = ap.parse_args(argv)
    if args.command == "use":
        print("\n".join(use(args.name)))
        return
    if args.command == "check-source":
        warning = source_mismatch(args.name, args.table)
        if warning:
            print(warning, file=sys.stderr)
        return
    init_dataset(args)


def init_dataset(args: argparse.Namespace) -> None:
    out = dataset_file(args.name)
    if out.exists():
        raise ConfigError(f"{out} exists: refusing to overwrite it (delete or rename it first)")
    if not args.file.exists():
        raise ConfigError(f"{args.file}: no such file")
    delimiter = {"\\t": "\t", "tab": "\t"}.get(args.delimiter or "", args.delimiter)
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    d = draft(args.file, args.name, args.target, features, args.id_column, delimiter,
              args.decimal, args.encoding)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(d, args.file), encoding="utf-8")
    print(summary(d, out))
    raw = Path(d.ds.source.path)
    if args.file.resolve() != raw.resolve():
        print(f"next: make data NAME={args.name} FILE={args.file}   # copies it to {raw} "
              "and tracks it with DVC")
    elif not Path(f"{raw}.dvc").exists():
        print(f"next: dvc add {raw}   # track the table (it stays out of git)")
    print(f"then: python -m medcast.datasets use {args.name}   # the dataset of every "
          "`dvc exp run`, -S or not")
    print(f"then: git add {out} {raw.parent} {CONFIG_FILE} params.yaml && "
          f"git commit -m 'Dataset {args.name}' && dvc exp run")


if __name__ == "__main__":
    main()
