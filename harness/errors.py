"""Errors that are the user's to fix: the CLI prints them in one line and exits 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input (a file, a flag, a model name): the message says what and where."""
