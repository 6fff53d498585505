"""`[[cron]]` jobs from `rivetr.toml`: what to run and when (five-field cron syntax, UTC).

The expressions are parsed and iterated by cronsim (a maintained library), not by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cronsim import CronSim, CronSimError

from rivetr_git.errors import CheckoutFailed

_KEYS = {"schedule", "command"}


@dataclass(frozen=True)
class CronJob:
    name: str  # cron.N: the N-th [[cron]] table of the file
    schedule: str  # five fields: minute hour day-of-month month day-of-week
    command: tuple[str, ...]  # argv; a string in the file becomes ("sh", "-c", string)

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after `moment` (aware, any zone) the job is due, in UTC."""
        utc = moment.astimezone(UTC).replace(tzinfo=None)
        return next(CronSim(self.schedule, utc)).replace(tzinfo=UTC)

    @property
    def shown(self) -> str:
        """The command as the file gave it."""
        if self.command[:2] == ("sh", "-c") and len(self.command) == 3:
            return self.command[2]
        return " ".join(self.command)


def parse_cron_tables(value: object, file_name: str) -> tuple[CronJob, ...]:
    """The `[[cron]]` array of tables. Raises CheckoutFailed naming the entry and the fix."""
    if not isinstance(value, list):
        raise CheckoutFailed(
            f'{file_name}: cron must be an array of tables: [[cron]] schedule = "0 3 * * *" '
            'command = "./nightly.sh"'
        )
    return tuple(_job(i, table, file_name) for i, table in enumerate(value, start=1))


def _job(index: int, table: object, file_name: str) -> CronJob:
    where = f"{file_name}: [[cron]] entry {index}"
    if not isinstance(table, dict):
        raise CheckoutFailed(f"{where} must be a table with schedule and command")
    unknown = set(table) - _KEYS
    missing = _KEYS - set(table)
    if unknown or missing:
        what = (
            f"unknown key(s) {', '.join(sorted(unknown))}"
            if unknown
            else f"missing {', '.join(sorted(missing))}"
        )
        raise CheckoutFailed(
            f'{where}: {what}; it takes schedule = "*/10 * * * *" and command = "./task.sh"'
        )
    return CronJob(
        name=f"cron.{index}",
        schedule=_schedule(table["schedule"], where),
        command=_command(table["command"], where),
    )


def _schedule(value: object, where: str) -> str:
    example = 'e.g. "*/15 * * * *" (every 15 minutes) or "0 3 * * *" (03:00 UTC daily)'
    if not isinstance(value, str) or len(value.split()) != 5:
        raise CheckoutFailed(
            f"{where}: schedule = {value!r} is not five cron fields "
            f"(minute hour day month weekday); {example}"
        )
    try:
        CronSim(value, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise CheckoutFailed(f"{where}: schedule = {value!r}: {exc}; {example}") from None
    return " ".join(value.split())


def _command(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip() and "\x00" not in value:
        return ("sh", "-c", value)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(a, str) and "\x00" not in a for a in value)
    ):
        return tuple(value)
    raise CheckoutFailed(
        f"{where}: command = {value!r}: give a shell command "
        '("./task.sh --all") or an argv list (["./task", "--all"])'
    )
