"""The one exception type for problems a user can fix, and the exit codes of every command.

Exit codes (documented in docs/reliability.md and the command reference):
    0   finished
    1   training failed (the run diverged: a loss not finite or exploding) or check-data / predict found bad files
    2   bad input or option: a wrong path, a damaged file, an option out of range
    74  I/O fault while writing (disk full, a file that cannot be written): EX_IOERR of sysexits.h
    130 interrupted (Ctrl-C or SIGTERM; fit saves its checkpoint first): 128 + SIGINT, as shells report
"""

import errno

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_IO = 74
EXIT_INTERRUPTED = 130


class FastsegError(Exception):
    """A user-facing error: its message is one sentence naming the file or option and what to do.

    The CLI prints the message without a traceback and exits with `exit_code`.
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(FastsegError):
    """A fit stopped by Ctrl-C or SIGTERM after saving its checkpoint; `rows` are the epochs done."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message, EXIT_INTERRUPTED)
        self.rows = rows


def absent(path) -> str:
    """Why `path` cannot be opened, as the end of a sentence naming it: a symbolic link that loops or
    whose target is gone is named as such (Path.exists() is False for both, like a missing file)."""
    return "is a symbolic link that loops or points nowhere" if path.is_symlink() else "does not exist"


def io_error(err: OSError, hint: str = "free space or fix the permissions, then run the command again") -> FastsegError:
    """One sentence for an OSError raised while writing, naming the path (exit code EXIT_IO)."""
    what = "No space left on device" if err.errno == errno.ENOSPC else (err.strerror or type(err).__name__)
    where = f" while writing {err.filename}" if err.filename else ""
    return FastsegError(f"{what}{where}; {hint}.", EXIT_IO)
