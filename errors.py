"""The error a user can fix (bad flag, bad file), reported as one line with exit status 2 (`utils.cli`)."""


class UserError(Exception):
    """A problem the user can fix (bad flag, bad file); reported as one line, exit status 2."""
