"""One case of the memory scenario: what it measured, its targets and its section of the report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from clients import JobRun
from measure import MIB
from report import TARGET_HEADER, Target, table, tally, target

from service.local.driver import Trickled

RSS_SLACK = 16 * MIB  # peak RSS within idle + CHUNK_MEMORY_MIB + 16 MiB
MAX_SIDE_RATIO = 1.2  # the other slot's job within 1.2 x its idle time
MAX_RELEASE_SECONDS = 1.0  # a cut-off trickler's memory back within a second
SAMPLE = 0.25  # seconds between /metrics reads of the chunk memory held (each costs a few ms)


def outcome(job: JobRun) -> str:
    if not job.ok:
        return "NO: " + "; ".join(job.problems)[:300]
    statuses = tally(job.statuses)
    return f"yes: {job.chunks} chunks in {job.seconds:.1f} s, {job.attempts} POSTs ({statuses})"


@dataclass
class Case:
    """One case of the memory scenario, (a) to (d), on a service of its own."""

    key: str
    title: str
    budget: int
    idle_rss: int = 0
    peak_rss: int = 0
    jobs: list[JobRun] = field(default_factory=list)  # the case's honest jobs
    side_idle: JobRun | None = None
    side_loaded: JobRun | None = None
    side_runs: int = 1  # the side times are the median of this many runs each
    trickles: list[Trickled] = field(default_factory=list)
    most_memory: float = 0.0  # upload_chunk_memory_bytes, sampled
    most_waiting: int = 0  # upload_chunks_waiting_for_memory, sampled
    cutoff_limit: float = 0.0  # seconds a trickler may hold its claim
    release_seconds: float | None = None  # (d): its 408 to no chunk in flight at the service
    memory_after: float | None = None  # (d): upload_chunk_memory_bytes then
    rss_after: int | None = None  # (d): VmRSS then
    # The runs of the same case, each on a fresh service, that this one is the run of
    # median other-slot ratio of; empty: it ran once.
    repeats: list[Case] = field(default_factory=list)

    @property
    def runs(self) -> list[Case]:
        return self.repeats or [self]

    @property
    def side_ratio(self) -> float | None:
        """The other slot's job under load x idle, if both completed."""
        idle, loaded = self.side_idle, self.side_loaded
        if idle is None or loaded is None or not (idle.ok and loaded.ok):
            return None
        return loaded.seconds / idle.seconds

    @property
    def failed(self) -> bool:
        """An upload that should have completed did not, or did not verify."""
        jobs = [job for run in self.runs for job in (*run.jobs, run.side_idle, run.side_loaded)]
        return any(job is not None and not job.ok for job in jobs)

    def targets(self) -> list[Target]:
        growth = max(run.peak_rss - run.idle_rss for run in self.runs) / MIB
        worst = f"; the most of {len(self.runs)} runs" if self.repeats else ""
        limit = (self.budget + RSS_SLACK) / MIB
        rows = [target(f"peak RSS - idle (MiB{worst})", growth, ".1f", "<=", limit, ".0f")]
        if self.jobs:
            rows.append(self._honest_target())
        if self.trickles:
            cut = [t.seconds for t in self.trickles if t.status == 408]
            late = [seconds for seconds in cut if seconds > self.cutoff_limit]
            unanswered = sum(t.status is None for t in self.trickles)
            rows.append(
                Target(
                    "trickling claims cut off: 408 after claim (s)",
                    f"{len(cut)} x 408 at {min(cut, default=0):.1f}-{max(cut, default=0):.1f} s; "
                    f"{unanswered} unanswered",
                    f"<= {self.cutoff_limit:g}",
                    bool(cut) and not late and not unanswered,
                )
            )
        if self.release_seconds is not None:
            name, seconds = "408 to its memory given back (s)", self.release_seconds
            rows.append(target(name, seconds, ".2f", "<=", MAX_RELEASE_SECONDS, "g"))
        if self.side_idle is not None and self.side_loaded is not None:
            rows.append(self._side_target(self.side_idle, self.side_loaded))
        return rows

    def _honest_target(self) -> Target:
        first = self.jobs[0]
        what = "job" if len(self.jobs) == 1 else f"{len(self.jobs)} jobs"
        others = [job for run in self.runs if run is not self for job in run.jobs]
        shown = "; ".join(map(outcome, self.jobs))
        if others:  # the other runs' jobs only where they failed
            failed = [job for job in others if not job.ok]
            shown += "; " + ("; ".join(map(outcome, failed)) or "other runs: yes")
        return Target(
            f"honest {what}: all 200, hash verified (tries {first.tries}, "
            f"{first.concurrency} at once{', reading Retry-After' if first.patient else ''}"
            f"{', every run' if self.repeats else ''})",
            shown,
            "yes",
            all(job.ok for job in (*self.jobs, *others)),
        )

    def _side_target(self, idle: JobRun, loaded: JobRun) -> Target:
        ratio = self.side_ratio
        if ratio is None:
            return Target(
                "other slot's job x idle", "did not complete", f"<= {MAX_SIDE_RATIO}", False
            )
        runs = f"; median of {self.side_runs} runs" if self.side_runs > 1 else ""
        every = ""
        if self.repeats:
            runs = f"; the median of {len(self.repeats)} runs of the case"
            ratios = sorted(run.side_ratio or float("inf") for run in self.repeats)
            every = "; runs " + ", ".join(f"{r:.2f}" for r in ratios)
        return Target(
            f"other slot's job ({loaded.chunks} chunks, 5 at once{runs}) x idle",
            f"{ratio:.2f} ({loaded.seconds:.2f} s / {idle.seconds:.2f} s){every}",
            f"<= {MAX_SIDE_RATIO}",
            ratio <= MAX_SIDE_RATIO,
        )

    def details(self) -> list[str]:
        lines = [
            f"idle RSS {self.idle_rss / MIB:.1f} MiB, peak RSS {self.peak_rss / MIB:.1f} MiB; "
            f"most chunk memory held {self.most_memory / MIB:.1f} MiB of {self.budget / MIB:.0f}, "
            f"most chunks waiting for it {self.most_waiting} (sampled every {SAMPLE} s)"
        ]
        if self.trickles:
            statuses = Counter(trickled.status for trickled in self.trickles)
            lines.append(f"trickling clients' answers: {tally(statuses)}")
        if self.memory_after is not None and self.rss_after is not None:
            lines.append(
                f"after the 408: upload_chunk_memory_bytes {self.memory_after / MIB:.1f} MiB "
                f"(idle buffers kept for reuse count), RSS {self.rss_after / MIB:.1f} MiB"
            )
        if self.side_loaded is not None and self.side_loaded.ok:
            lines.append(f"other slot's job under load: {tally(self.side_loaded.statuses)}")
        return lines

    def section(self) -> list[str]:
        return [
            f"### ({self.key}) {self.title}",
            "",
            *table(TARGET_HEADER, [target.row() for target in self.targets()]),
            "",
            *(f"- {line}" for line in self.details()),
        ]

    def figures(self) -> dict[str, object]:
        return {
            "title": self.title,
            "targets": self.targets(),
            "idle_rss_mib": self.idle_rss / MIB,
            "peak_rss_mib": self.peak_rss / MIB,
            "most_chunk_memory_mib": self.most_memory / MIB,
            "most_waiting_for_memory": self.most_waiting,
            "side_ratio": self.side_ratio,
            "side_ratios": [run.side_ratio for run in self.repeats],
            "release_seconds": self.release_seconds,
        }


async def median_run(runs: int, once: Callable[[], Awaitable[Case]]) -> Case:
    """`runs` runs of a case; the run of median other-slot ratio, holding them all (a job of
    two seconds, timed once on a shared machine, is at the mercy of its noise)."""
    done = [await once() for _ in range(runs)]
    if len(done) == 1:
        return done[0]
    median = sorted(done, key=lambda run: run.side_ratio or float("inf"))[len(done) // 2]
    median.repeats = done
    return median
