"""What every T04 script shares: numbered section headings, and run-time checks of each claim.

A lesson that says "these two share memory" should prove it while you watch. `check()`
prints the claim when it holds and stops the script with a clear message when it does
not (for example after you change the code and break an assumption).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from common.cli import UserError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # some torch messages contain terminal colour codes
_claims_checked = 0


class ClaimFailed(UserError):
    """A claim the lesson makes turned out false; `cli.run_main` prints it as one line and exits 2."""


def start(title: str) -> None:
    """Print the script's title and reset the count of checked claims."""
    global _claims_checked
    _claims_checked = 0
    print(title)
    print("=" * len(title))


def section(number: int, title: str) -> None:
    """Print a numbered section heading."""
    heading = f"{number}. {title}"
    print(f"\n{heading}\n{'-' * len(heading)}")


def check(condition: object, claim: str) -> None:
    """Print `claim` if `condition` is true; otherwise stop with ClaimFailed naming the claim."""
    global _claims_checked
    if not bool(condition):  # bool() also accepts a one-element tensor such as torch.equal(...) or (a == b).all()
        raise ClaimFailed(f"claim failed: {claim}")
    _claims_checked += 1
    print(f"  [ok] {claim}")


def raises(error: type[BaseException] | tuple[type[BaseException], ...], action: Callable[[], object],
           claim: str, pick: str = "") -> str:
    """Check that `action()` raises `error`; return one line of its message to print.

    That is the first line containing `pick` if given, else the first line (joined to the
    next one when it ends with a colon, as in "Error(s) in loading state_dict for Net:").
    """
    try:
        action()
    except error as err:
        check(True, claim)
        lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
        picked = [line for line in lines if pick and pick in line]
        if picked:
            return picked[0]
        if len(lines) > 1 and lines[0].endswith(":"):
            return f"{lines[0]} {lines[1]}"
        return lines[0] if lines else type(err).__name__
    check(False, claim)
    return ""  # not reached: check(False, ...) raises


def done() -> int:
    """Print how many claims were checked and return that number."""
    print(f"\nAll {_claims_checked} claims above were checked and held.")
    return _claims_checked
