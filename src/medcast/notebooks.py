"""Execute the notebooks top to bottom (nbclient) and save executed copies:
`python -m medcast.notebooks [--out reports/notebooks] [NAME ...]` (what `make notebooks` runs)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from medcast.errors import MedcastError, cli

log = logging.getLogger("medcast.notebooks")


def execute(path: Path, timeout: int = 600) -> Any:
    """Run one notebook with its own folder as working directory; raise on the first error."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as err:
        raise MedcastError(f"{path.name}: a cell failed:\n{err}") from None
    return nb


@cli
def main(argv: list[str] | None = None) -> None:
    import nbformat

    ap = argparse.ArgumentParser(description="execute medcast's notebooks")
    ap.add_argument("names", nargs="*", help="notebook files (default: notebooks/*.ipynb)")
    ap.add_argument("--out", default="reports/notebooks", help="folder for executed copies")
    args = ap.parse_args(argv)
    paths = [Path(n) for n in args.names] or sorted(Path("notebooks").glob("*.ipynb"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        start = time.perf_counter()
        nb = execute(path)
        nbformat.write(nb, out / path.name)
        log.info("%s: ok in %.1f s → %s", path.name, time.perf_counter() - start, out / path.name)


if __name__ == "__main__":
    main()
