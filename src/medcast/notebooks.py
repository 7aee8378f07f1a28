"""Execute the notebooks top to bottom (nbclient) and save executed copies:
`python -m medcast.notebooks [--out reports/notebooks] [NAME ...]` (what `make notebooks` runs).
Also what the notebooks share: the service client of 04 (`service_client`) and the check that
the pipeline outputs a notebook reads exist (`require_outputs`)."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcast.errors import MedcastError, cli

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("medcast.notebooks")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000  # the service's default MEDCAST_PORT
NOTEBOOKS = Path("notebooks")


class NotebookStop(MedcastError):
    """A notebook cannot go on for a reason the user can fix: shown as this one line."""

    def _render_traceback_(self) -> list[str]:
        # IPython (Jupyter and nbclient alike) shows these lines instead of a traceback.
        return [f"{type(self).__name__}: {self}"]


class NotebookFailed(MedcastError):
    """A cell of a notebook failed; `nb` holds the notebook executed up to that cell."""

    def __init__(self, message: str, nb: Any) -> None:
        super().__init__(message)
        self.nb = nb


def service_url() -> str:
    """MEDCAST_URL, else the service's default address on MEDCAST_PORT (as `make serve`)."""
    port = os.environ.get("MEDCAST_PORT") or DEFAULT_PORT
    return os.environ.get("MEDCAST_URL") or f"http://{DEFAULT_HOST}:{port}"


def service_client(url: str | None = None, timeout: float = 10) -> httpx.Client:
    """An HTTP client for the medcast service, once it answers ready; else NotebookStop saying
    what to do (start it, or why it is not ready)."""
    import httpx

    base = url or service_url()
    client = httpx.Client(base_url=base, timeout=timeout)
    try:
        ready = client.get("/health/ready")
    except httpx.TransportError as err:  # refused, unreachable, timed out
        client.close()
        raise NotebookStop(f"no service at MEDCAST_URL={base} ({err or type(err).__name__}); "
                           "start it with `make serve`") from None
    if ready.status_code != 200:
        client.close()
        raise NotebookStop(f"the service at MEDCAST_URL={base} is not ready "
                           f"({ready.status_code}: {ready.text.strip()[:300]})")
    return client


def require_outputs(*paths: str) -> None:
    """NotebookStop naming the pipeline outputs a notebook reads that are not there yet, and
    what makes them."""
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise NotebookStop(f"{', '.join(missing)} not found: run the pipeline first (`make "
                           "repro`), or fetch the committed results (`make pull`)")


def notebook_path(name: str, folder: Path = NOTEBOOKS) -> Path:
    """A notebook by its file, its name in notebooks/ with or without .ipynb, or a prefix of
    one name there ('04'); else MedcastError listing the notebooks."""
    for candidate in (Path(name), folder / name, folder / f"{name}.ipynb"):
        if candidate.is_file():
            return candidate
    if not folder.is_dir():
        raise MedcastError(f"no notebook {name!r} and no {folder}/ here: run from the "
                           "repository root")
    known = sorted(folder.glob("*.ipynb"))
    matches = [p for p in known if p.stem.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    stems = ", ".join(p.stem for p in known) or "none"
    raise MedcastError(f"no notebook {name!r} in {folder}/ ({stems}); e.g. `python -m "
                       f"medcast.notebooks {known[0].stem if known else 'NAME'}`")


def _kernel_config(socket_dir: str) -> Any:
    """The kernel talks to nbclient over IPC sockets in `socket_dir` (a private folder, absolute:
    the kernel runs in the notebook's folder) where the platform has them: nothing listens on
    TCP, so the kernel has no unencrypted port to warn about. jupyter_client runs the python3
    kernel with this interpreter."""
    import zmq
    from traitlets.config import Config

    if not zmq.has("ipc"):
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": f"{socket_dir}/kernel"}})


def execute(path: Path, timeout: int = 600) -> Any:
    """Run one notebook with its own folder as working directory; NotebookFailed (one line:
    notebook, error type and message) on the first failing cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="medcast-kernel-") as socket_dir:  # mode 700
        client = NotebookClient(nb, kernel_name="python3", config=_kernel_config(socket_dir),
                                timeout=timeout, resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except CellExecutionError as err:
            raise NotebookFailed(f"{path.name}: {err.ename}: {err.evalue}", nb) from None
        except CellTimeoutError:
            raise NotebookFailed(f"{path.name}: a cell ran longer than {timeout} s", nb) from None
        except DeadKernelError as err:
            raise NotebookFailed(f"{path.name}: the kernel died ({err})", nb) from None
    return nb


@cli
def main(argv: list[str] | None = None) -> None:
    import nbformat

    ap = argparse.ArgumentParser(description="execute medcast's notebooks")
    ap.add_argument("names", nargs="*", help="notebooks, by file or name, e.g. 04-api-client "
                                             "(default: notebooks/*.ipynb)")
    ap.add_argument("--out", default="reports/notebooks", help="folder for executed copies")
    args = ap.parse_args(argv)
    logging.getLogger("traitlets").setLevel(logging.WARNING)  # nbclient's "Executing notebook"
    paths = [notebook_path(n) for n in args.names] or sorted(NOTEBOOKS.glob("*.ipynb"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in paths:  # every notebook runs, even after one failed: they are independent
        start = time.perf_counter()
        try:
            nb = execute(path)
        except NotebookFailed as err:
            nbformat.write(err.nb, out / path.name)
            failed.append(f"{err} (cells run so far: {out / path.name})")
            continue
        nbformat.write(nb, out / path.name)
        log.info("%s: ok in %.1f s → %s", path.name, time.perf_counter() - start, out / path.name)
    if failed:
        raise MedcastError("\nerror: ".join(failed))


if __name__ == "__main__":
    main()
