"""Delivery and injection outcomes, defined once: permanent or temporary, with a code.

Every daemon reports a result as one of these kinds; ``send`` decides from the kind alone
whether to retry (temporary), bounce (permanent) or finish (delivered).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"  # try again on the retry schedule
    PERMANENT = "permanent"  # bounce now


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    text: str
    enhanced: str = ""  # RFC 3463 status, e.g. "5.1.1"

    @property
    def is_final(self) -> bool:
        return self.outcome is not Outcome.TEMPORARY


# sysexits(3) values used by the sendmail command (issue "Foundation").
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
