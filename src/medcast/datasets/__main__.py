"""`python -m medcast.datasets init FILE --name NAME --target COLUMN [--features C1,C2,…]`:
draft conf/dataset/NAME.yaml from a table, print a summary, and say what to run next."""

from __future__ import annotations

import argparse
from pathlib import Path

from medcast.datasets.draft import draft, render, summary
from medcast.datasets.spec import dataset_file
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
    init.add_argument("--encoding", default="utf-8", help="text encoding (default utf-8)")
    args = ap.parse_args(argv)

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
    print(f"then: git add {out} && dvc exp run -S dataset={args.name}")


if __name__ == "__main__":
    main()
