"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class FlexrlError(Exception):
    """A problem the user can fix (a missing file, a bad key, an unknown run).

    The message must name what is wrong in one line; no traceback is shown unless --debug.
    """

    exit_code = 2
