"""The cron scheduler and `[[cron]]` parsing, as pure logic: an injected clock, a fake run.

The run is a coroutine the test controls (named `fake_run`), so due times, skipping while a
run is still going and the rebuild after a restart are checked without Docker; the real run
in a container is in tests/test_cron_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rivetr_git.errors import CheckoutFailed
from rivetr_git.pipeline import repo_config
from rivetr_git.pipeline.cron import Scheduler
from rivetr_git.pipeline.cron_jobs import CronJob
from rivetr_git.pipeline.cron_log import CronLog
from rivetr_git.runtime.base import OnOutput

T0 = datetime(2026, 12, 2, 6, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, hh: int, mm: int, ss: int = 0) -> None:
        self.now = self.now.replace(hour=hh, minute=mm, second=ss)


class World:
    """What the scheduler reads (live releases and their jobs) and runs (fake_run)."""

    def __init__(self) -> None:
        self.live: dict[str, int] = {}
        self.jobs: dict[int, tuple[CronJob, ...]] = {}
        self.started: list[tuple[str, str]] = []
        self.finish: dict[str, asyncio.Event] = {}
        self.code = 0

    async def live_releases(self) -> Mapping[str, int]:
        return dict(self.live)

    async def jobs_of(self, app: str, deployment_id: int) -> tuple[CronJob, ...]:
        return self.jobs.get(deployment_id, ())

    async def fake_run(self, app: str, job: CronJob, out: OnOutput) -> int:
        self.started.append((app, job.name))
        await out(b"hello from " + job.name.encode() + b"\npartial")
        await self.finish.setdefault(job.name, asyncio.Event()).wait()
        return self.code


def _jobs(text: str) -> tuple[CronJob, ...]:
    return repo_config.parse(text.encode()).cron


def _scheduler(world: World, clock: Clock, tmp_path: Path) -> Scheduler:
    return Scheduler(
        world.live_releases,
        world.jobs_of,
        world.fake_run,
        CronLog(tmp_path / "cron", clock),
        clock=clock,
    )


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_cron_tables_parse() -> None:
    jobs = _jobs(
        '[[cron]]\nschedule = "*/5 * * * *"\ncommand = "echo hi > /tmp/x"\n'
        '[[cron]]\nschedule = "0 3 * * 1"\ncommand = ["./task", "--all"]\n'
    )
    assert [j.name for j in jobs] == ["cron.1", "cron.2"]
    assert jobs[0].command == ("sh", "-c", "echo hi > /tmp/x")
    assert jobs[0].shown == "echo hi > /tmp/x"
    assert jobs[1].command == ("./task", "--all")
    assert jobs[1].next_after(T0) == datetime(2026, 12, 7, 3, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[[cron]]\nschedule = "* * * *"\ncommand = "x"\n', "entry 1: schedule = '* * * *'"),
        ('[[cron]]\nschedule = "61 * * * *"\ncommand = "x"\n', "Bad minute"),
        ('[[cron]]\nschedule = "* * * * * *"\ncommand = "x"\n', "not five cron fields"),
        ('[[cron]]\nschedule = "* * * * *"\n', "entry 1: missing command"),
        (
            '[[cron]]\nschedule = "* * * * *"\ncommand = "x"\n[[cron]]\nschedule = "* * * * *"'
            '\ncommand = ""\n',
            "entry 2: command = ''",
        ),
        ('[[cron]]\nschedule = "* * * * *"\ncommand = "x"\nuser = "root"\n', "unknown key(s) user"),
        ('cron = "* * * * *"\n', "cron must be an array of tables"),
    ],
)
def test_bad_cron_tables_name_the_entry(text: str, says: str) -> None:
    with pytest.raises(CheckoutFailed) as caught:
        repo_config.parse(text.encode())
    assert says in str(caught.value)
    assert "rivetr.toml" in str(caught.value)


async def test_jobs_run_when_due_and_a_running_one_is_skipped(tmp_path: Path) -> None:
    clock, world = Clock(), World()
    world.live = {"cra": 7}
    world.jobs[7] = _jobs(
        '[[cron]]\nschedule = "* * * * *"\ncommand = "a"\n'
        '[[cron]]\nschedule = "*/5 * * * *"\ncommand = "b"\n'
    )
    scheduler = _scheduler(world, clock, tmp_path)
    await scheduler.refresh()
    every_minute, every_five = scheduler.jobs("cra")
    assert every_minute.next_at == datetime(2026, 12, 2, 6, 1, tzinfo=UTC)
    assert every_five.next_at == datetime(2026, 12, 2, 6, 5, tzinfo=UTC)
    assert scheduler.next_wake() == 5.0  # refresh caps the sleep; the first run is 30 s away

    clock.at(6, 0, 59)
    scheduler.tick()
    await _settle()
    assert world.started == []  # not yet due

    clock.at(6, 1, 0)
    scheduler.tick()
    await _settle()
    assert world.started == [("cra", "cron.1")]
    assert every_minute.next_at == datetime(2026, 12, 2, 6, 2, tzinfo=UTC)

    clock.at(6, 2, 0)  # cron.1 is still running: this run is skipped, and the log says so
    scheduler.tick()
    await _settle()
    assert world.started == [("cra", "cron.1")]
    log = "\n".join(scheduler.log.tail("cra", 100))
    assert "cron.1: skipped the run due at 2026-12-02 06:02 UTC" in log
    assert "the run started at 2026-12-02 06:01 UTC is still going" in log

    world.code = 3
    world.finish["cron.1"].set()
    clock.at(6, 2, 10)
    await _settle()
    last = scheduler.log.last("cra", every_minute.job)
    assert last is not None and last.exit_code == 3
    assert last.started == datetime(2026, 12, 2, 6, 1, tzinfo=UTC)
    log = "\n".join(scheduler.log.tail("cra", 100))
    assert "cron.1: hello from cron.1\n" in log + "\n"
    assert "cron.1: partial\n" in log + "\n"  # the last partial line is kept
    assert "cron.1: exited with code 3" in log

    clock.at(6, 5, 0)  # both due: cron.1 is free again, cron.2's first run
    scheduler.tick()
    await _settle()
    assert world.started[1:] == [("cra", "cron.1"), ("cra", "cron.2")]
    await scheduler.close()


async def test_a_new_release_replaces_the_jobs_and_a_restart_rebuilds_them(
    tmp_path: Path,
) -> None:
    clock, world = Clock(), World()
    world.live = {"cra": 1, "crb": 2}
    world.jobs[1] = _jobs('[[cron]]\nschedule = "* * * * *"\ncommand = "old"\n')
    world.jobs[2] = _jobs('[[cron]]\nschedule = "0 * * * *"\ncommand = "hourly"\n')
    world.jobs[3] = _jobs('[[cron]]\nschedule = "30 6 * * *"\ncommand = "new"\n')
    scheduler = _scheduler(world, clock, tmp_path)
    await scheduler.refresh()
    assert [e.job.shown for e in scheduler.jobs("cra")] == ["old"]

    world.live = {"cra": 3}  # a deploy of cra; crb was destroyed
    await scheduler.refresh()
    assert [(e.job.shown, e.next_at) for e in scheduler.jobs("cra")] == [
        ("new", datetime(2026, 12, 2, 6, 30, tzinfo=UTC))
    ]
    assert scheduler.jobs("crb") == []

    clock.now = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
    scheduler.tick()
    await _settle()
    world.finish["cron.1"].set()
    await _settle()
    await scheduler.close()

    # A server restart: a new scheduler from the same database and files.
    clock.now += timedelta(minutes=3)
    again = _scheduler(world, clock, tmp_path)
    await again.refresh()
    (entry,) = again.jobs("cra")
    assert entry.next_at == datetime(2026, 12, 3, 6, 30, tzinfo=UTC)
    last = again.log.last("cra", entry.job)
    assert last is not None and last.exit_code == 0
    assert last.started == datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
    await again.close()


async def test_the_loop_sleeps_until_the_next_job(tmp_path: Path) -> None:
    """run() (via start) refreshes, starts what is due and sleeps until the next due time."""
    clock, world = Clock(), World()
    world.live = {"cra": 1}
    world.jobs[1] = _jobs('[[cron]]\nschedule = "* * * * *"\ncommand = "a"\n')
    slept: list[float] = []
    woke = asyncio.Event()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += timedelta(seconds=seconds)
        if len(slept) >= 8:
            woke.set()
            await asyncio.Event().wait()

    scheduler = Scheduler(
        world.live_releases,
        world.jobs_of,
        world.fake_run,
        CronLog(tmp_path / "cron", clock),
        clock=clock,
        sleep=sleep,
    )
    scheduler.start()
    await asyncio.wait_for(woke.wait(), 5)
    assert world.started == [("cra", "cron.1")]  # at 06:01:00, after 30 s of sleeps
    assert sum(slept[:6]) == pytest.approx(30.0)
    await scheduler.close()


def test_the_cron_log_feeds_followers_rotates_and_is_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    log = CronLog(tmp_path / "cron", clock, max_bytes=200)
    with log.follow("cra") as queue:
        log.line("cra", "cron.1", "one")
        assert queue.get_nowait() == "2026-12-02T06:00:30Z cron.1: one"
    log.line("cra", "cron.1", "after")  # nobody follows any more: nothing queued
    assert queue.empty()
    for i in range(20):
        log.line("cra", "cron.2", f"line {i}")
    assert (tmp_path / "cron" / "cra.log.1").exists()  # rotated past max_bytes
    assert log.tail("cra", 2) == [
        "2026-12-02T06:00:30Z cron.2: line 18",
        "2026-12-02T06:00:30Z cron.2: line 19",
    ]
    assert len(log.tail("cra", 100)) < 22  # only one old file is kept
    log.remove("cra")
    assert log.tail("cra", 100) == [] and list((tmp_path / "cron").iterdir()) == []
