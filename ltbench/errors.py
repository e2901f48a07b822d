"""Errors meant for users: the CLI prints them as one line (no traceback) and exits non-zero."""


class LTBenchError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""

    exit_code = 2


class NotFoundError(LTBenchError):
    """An unknown name (method, dataset, backbone, run) or a missing file."""


class ConfigError(LTBenchError):
    """A bad option value, suite file or combination of settings."""


class DataError(LTBenchError):
    """Data missing or malformed (with the file, line and accepted layouts)."""


class RunExistsError(LTBenchError):
    """A run folder of that name exists already; runs are never overwritten."""


class WriteError(LTBenchError, OSError):
    """A file could not be written (disk full, read-only folder); what was written before is kept. Also an
    OSError, so code that falls back on write failures (the decode cache, say) still does."""


class TrainingDiverged(LTBenchError):
    """Loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


def did_you_mean(name: str, choices, n: int = 3, cutoff: float = 0.6) -> str:
    """"; did you mean 'crt'?" (up to ``n`` close matches of ``name`` among ``choices``, as difflib ranks them),
    or "" when none is close: the hint every "unknown NAME" message ends with."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
