"""The error a user sees as a one-line message instead of a stack trace.

It lives in udfs/ because every room raises it: udfs (a missing model, an unreadable video
source), jobs (a bad flag, a missing table) and the config loader."""


class VidlakeError(Exception):
    """Something the user can fix: the message says what and how."""
