"""The one error a user sees for bad input: where it is, and what was expected."""

from __future__ import annotations

import difflib
from typing import Iterable


class StudyError(Exception):
    """Bad input in a study file or dataset; the CLI prints it and exits with status 2."""

    exit_code = 2

    def __init__(self, where: str, message: str):
        self.where, self.message = where, message
        super().__init__(f"{where}: {message}")


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
