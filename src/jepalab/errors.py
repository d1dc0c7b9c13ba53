"""One exception type for user-facing errors: the CLI prints it as one line and exits 2."""

from __future__ import annotations


class JepalabError(Exception):
    """A problem with the user's input (config, file, value): one line, never a traceback."""
