from __future__ import annotations

import os

from medcast.native_log import harmless, quiet_native_log

E_THREADPOOL = (b"E0000 00:00:1796005545.914317   15739 node_def_util.cc:682] NodeDef mentions "
                b"attribute use_unbounded_threadpool which is not in the op definition: Op<...>\n")
W_CANCELLED = (b"W0000 00:00:1796006685.112957   25752 root_dataset.cc:364] Optimization loop "
               b"failed: CANCELLED: Operation was cancelled\n")
E_REAL = b"E0000 00:00:1796006685.1 1 bfc_allocator.cc:485] Allocator ran out of memory\n"


def test_only_the_known_harmless_lines_are_harmless():
    assert harmless(E_THREADPOOL) and harmless(W_CANCELLED)
    assert not harmless(E_REAL)
    assert not harmless(b"W0000 00:00:1.2 1 root_dataset.cc:364] Optimization loop failed: "
                        b"INTERNAL: something real\n")


def test_quiet_native_log_drops_harmless_lines_and_passes_the_rest_in_order(capfd):
    with quiet_native_log():
        os.write(2, b"first\n" + E_THREADPOOL)
        os.write(2, W_CANCELLED + E_REAL)
        with quiet_native_log():  # nested: a no-op
            os.write(2, b"no newline at the end")
    err = capfd.readouterr().err.encode()
    assert err == b"first\n" + E_REAL + b"no newline at the end"
    os.write(2, E_THREADPOOL)  # after the block, stderr is the real one again
    assert capfd.readouterr().err.encode() == E_THREADPOOL


def test_a_child_process_holding_stderr_does_not_hold_up_the_end(capfd):
    """A worker started inside (loky keeps its workers for minutes) inherits the pipe as its
    stderr: the block ends once what was written has passed, not when the child exits."""
    import subprocess
    import sys
    import time

    child = None
    try:
        with quiet_native_log():
            child = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                                      "sys.stderr.write('child line\\n'); sys.stderr.flush(); "
                                      "time.sleep(60)"])
            time.sleep(0.5)  # the child's line is in the pipe
            os.write(2, b"last line\n" + E_THREADPOOL)
            start = time.monotonic()
        took = time.monotonic() - start
        assert child.poll() is None  # still holding the pipe
    finally:
        if child is not None:
            child.kill()
            child.wait()
    assert took < 5, f"the block waited {took:.1f} s for a child process"
    err = capfd.readouterr().err
    assert "child line\n" in err and err.endswith("last line\n")
