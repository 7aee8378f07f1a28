"""Errors a user can fix, and the CLI wrapper that prints them without a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

log = logging.getLogger("medcast")


class MedcastError(Exception):
    """A problem with user input (params, data, artifacts): printed as one message, exit 2."""


class ConfigError(MedcastError):
    """params.yaml does not match what the stages expect."""


class DataValidationError(MedcastError):
    """A raw data file breaks the dataset's declared schema."""


class NoSignalError(MedcastError):
    """No candidate beats predicting the mean, and train.require_signal asks to stop there."""


class ArtifactError(MedcastError):
    """A model or report artifact is missing, unsafe or does not match dvc.lock."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (libraries' messages can run to pages), or its
    type's name when it has none."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


F = TypeVar("F", bound=Callable[..., object])


def cli(func: F) -> F:
    """Run a stage's main(): configure logging, turn MedcastError into a message and exit 2."""

    @wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        # One OpenMP thread per process (read when scikit-learn's OpenMP runtime loads, later
        # than this): histogram boosting on a busy 2-core machine ran 7× slower with two
        # threads spinning against other processes (measured 1.1 s against 0.16 s a fit).
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from medcast.native_log import quiet_native_log

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        try:
            with quiet_native_log():  # TensorFlow's known-harmless C++ log lines
                return func(*args, **kwargs)
        except MedcastError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
