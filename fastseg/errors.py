"""The one exception type for problems a user can fix (bad paths, options or files)."""


class FastsegError(Exception):
    """A user-facing error: its message is one sentence naming the file or option and what to do.

    The CLI prints the message without a traceback and exits with `exit_code`.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
