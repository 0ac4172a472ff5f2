"""Errors the command line reports as one line with exit code 2."""


class UsageError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""
