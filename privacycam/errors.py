"""User-facing errors: one clear line saying what is wrong and how to fix it.

The CLI catches `PrivacyCamError` at the top, prints `privacycam: <message>` and
exits with `exit_code`; nothing below the CLI prints tracebacks for these.
"""

from __future__ import annotations

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


class PrivacyCamError(Exception):
    """A problem the user can fix. `fix` says how."""

    exit_code = EXIT_RUNTIME

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if not self.fix:
            return self.problem
        # Problems quoting a library's own sentence ("Device /dev/video5 does not exist.") end in a full stop already.
        return f"{self.problem.rstrip().rstrip('.')}. Fix: {self.fix}"


class ConfigError(PrivacyCamError):
    exit_code = EXIT_CONFIG


class SourceError(PrivacyCamError):
    """The frame source cannot be opened or read."""


class SourceEndedEarly(SourceError):
    """A finite source ended before its own header says it should (a file cut short).

    Everything before that was delivered; reopening would only play it again.
    """


class SinkError(PrivacyCamError):
    """The output cannot be opened or written."""


class ModelError(PrivacyCamError):
    """A segmentation model is missing, unreadable or unknown."""

    exit_code = EXIT_CONFIG
