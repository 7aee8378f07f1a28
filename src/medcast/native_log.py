"""TensorFlow's C++ log on stderr (file descriptor 2, out of Python's `logging`), without the
lines known to be harmless: `quiet_native_log()` filters them while a CLI runs and passes every
other byte through unchanged, in order. Nothing happens at import."""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading
from collections.abc import Iterator

# C++ log lines of TensorFlow 2.21 / Keras 3.15 that say nothing a user can act on.
HARMLESS = re.compile(
    rb"|".join([
        # tf.data under op determinism (our reproducibility) rewrites Keras' parallel map of
        # batches into a sequential map and copies an attribute that op lacks; TF itself adds
        # "Unknown attributes will be ignored". Once per fit.
        rb"node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool ",
        # tf.data's autotuning thread, cancelled when Keras drops an iterator after fit.
        rb"root_dataset\.cc:\d+\] Optimization loop failed: CANCELLED",
        # Start-up notices of every TensorFlow import (printed whatever TF_CPP_MIN_LOG_LEVEL).
        rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to",
        rb"port\.cc:\d+\] oneDNN custom operations are on",
        rb"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use",
        rb"^To enable the following instructions: .* rebuild TensorFlow with",
    ])
)
# Below this, TensorFlow drops C++ INFO lines; warnings and errors stay (then the filter above).
TF_LOG_LEVEL = "1"

_active = threading.Lock()


def harmless(line: bytes) -> bool:
    return HARMLESS.search(line) is not None


def _pass(held: bytes, chunk: bytes, real: int) -> bytes:
    """Write the complete lines of held + chunk that are not harmless to `real`; return the
    unfinished last line."""
    *lines, rest = (held + chunk).split(b"\n")
    for line in lines:
        if not harmless(line + b"\n"):
            os.write(real, line + b"\n")
    return rest


@contextlib.contextmanager
def quiet_native_log() -> Iterator[None]:
    """Inside: file descriptor 2 goes through a pipe; a thread writes every line that is not
    `harmless` to the real stderr. Set before TensorFlow is imported (TF_CPP_MIN_LOG_LEVEL,
    unless the user set it). A line without a newline is held until its newline or the end.
    Nested uses are no-ops.

    At the end the thread passes on what is already in the pipe and stops: it does not wait
    for the pipe to close, because worker processes started inside (joblib's loky keeps its
    workers alive for minutes, Dask's likewise) inherited the pipe as their stderr and hold it
    open until they exit, after the stage. Waiting for them cost every stage that started one
    a 10 s time-out."""
    if not _active.acquire(blocking=False):
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    stop_read, stop_write = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        held = b""
        while True:
            ready, _, _ = select.select([read_end, stop_read], [], [])
            if read_end in ready:  # data first: everything written before the stop passes
                chunk = os.read(read_end, 1 << 16)
                if not chunk:  # every writer closed the pipe
                    break
                held = _pass(held, chunk, real)
                continue
            os.set_blocking(read_end, False)  # stopped: drain what the pipe holds, then end
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(read_end, 1 << 16):
                    held = _pass(held, chunk, real)
            break
        if held and not harmless(held):
            os.write(real, held)

    thread = threading.Thread(target=pump, name="medcast-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # this process writes to the real stderr again
        os.write(stop_write, b"x")
        thread.join(timeout=10)
        for fd in (real, read_end, stop_read, stop_write):
            os.close(fd)
        _active.release()
