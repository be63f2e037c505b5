"""How an upload ended: one `Outcome` each, its value the label `upload_jobs_total` counts it
under."""

from __future__ import annotations

import logging
from enum import StrEnum


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # every chunk stored and the success finish sent
    TIMED_OUT = "timed_out"  # no chunk for UPLOAD_INACTIVITY_TIMEOUT
    DISCORD_REFUSED = "discord_refused"  # the token, the channel or the size
    SHUTDOWN = "shutdown"  # the service stopped
    ABORTED = "aborted"  # the manager asked for it
    VOIDED = "voided"  # the manager link was lost, or the success finish could not be sent
    FAILED = "failed"  # every chunk stored, but the success could not be built or journaled

    @property
    def reported(self) -> bool:
        """Whether the manager is sent a finish packet: not for an abort (its reply is the
        answer) nor a lost link (the manager fails the job itself)."""
        return self not in (Outcome.ABORTED, Outcome.VOIDED)

    @property
    def log_level(self) -> int:
        """How loud its end is logged: INFO for what the user did (finished, abandoned,
        cancelled), ERROR for a failure of ours (the runbook's error lines name the job),
        WARNING for the rest (Discord refusing the job, a lost link, a shutdown)."""
        if self in (Outcome.SUCCEEDED, Outcome.TIMED_OUT, Outcome.ABORTED):
            return logging.INFO
        return logging.ERROR if self is Outcome.FAILED else logging.WARNING
