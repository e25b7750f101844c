"""The one exception type domain modules raise; cli.py turns it into a message and an exit code."""

USAGE_ERROR = 2
CHECK_FAILED = 1


class GrugError(Exception):
    """A problem the user can fix: the message is one sentence saying what is wrong and what to do."""

    def __init__(self, message: str, exit_code: int = USAGE_ERROR):
        super().__init__(message)
        self.exit_code = exit_code
