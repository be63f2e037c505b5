"""The pacing benchmark's figures: a rate-limited run's measurements, the bucket's ideal,
and the report's table.

The ideal is the time a perfect pacer needs for one job of C chunks in a channel allowed L
posts per fixed window of W seconds. The stand-in opens a channel's window with its first
post, so a perfect pacer posts chunks 0..L-1 at once, the next L as the window resets, and
chunk k at floor(k / L) x W: the last one at

    ideal = (ceil(C / L) - 1) x W

that is ceil(C / L) windows less the last window's tail (all of it but the instant its
posts are sent). The posts' own transfer is left out (milliseconds for small chunks on
loopback), so a ratio of 1.0 is out of reach and about 1.0 plus a few percent is perfect.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass

from measure import MIB
from report import table


@dataclass(frozen=True)
class Limits:
    per_channel: int  # posts per window in one channel
    window: float  # seconds
    global_per_second: float  # the reference the aggregate rate is compared with

    def ideal(self, chunks: int) -> float:
        """Seconds a perfect pacer needs for `chunks` posts in one channel (see above)."""
        return (math.ceil(chunks / self.per_channel) - 1) * self.window


@dataclass
class PacingRun:
    """One run: N slots, one job each in its own channel, all at once."""

    slots: int
    chunks: int  # per job
    chunk_size: int
    seconds: float  # the first POST to the last finish packet
    job_seconds: list[float]  # each job's first POST to its finish packet
    last_posts: list[float]  # the run's first POST to each job's last stored post
    finish_lags: list[float]  # each job's last stored post to its finish packet
    accepted: int  # messages stored, all channels
    posts: int  # POSTs that reached the messages route, refused ones included
    channel_429s: int  # refused by a channel's window (the stand-in's `rate_limited`)
    service_429s: int  # 429 answers the service's Discord client counted (/metrics)
    client_statuses: Counter[int]  # the browsers' answers other than 200, by status
    attachment_size: int  # bytes of one stored chunk (sealed)

    def figures(self, limits: Limits) -> dict[str, float]:
        ideal = limits.ideal(self.chunks)
        rate = self.accepted / self.seconds
        return {
            "job_s_median": statistics.median(self.job_seconds),
            "job_s_max": max(self.job_seconds),
            "ideal_s": ideal,
            "job_vs_ideal_median": statistics.median(self.job_seconds) / ideal,
            "job_vs_ideal_max": max(self.job_seconds) / ideal,
            "last_post_vs_ideal_max": max(self.last_posts) / ideal,
            "posts_per_s": rate,
            "posts_per_s_vs_global": rate / limits.global_per_second,
            "channel_429s": float(self.channel_429s),
            "service_429s": float(self.service_429s),
            "wasted_mib_estimate": self.channel_429s * self.attachment_size / MIB,
            "finish_lag_ms_max": max(self.finish_lags) * 1000,
        }


def statuses_text(statuses: Counter[int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())) or "none"


def pacing_table(runs: list[PacingRun], limits: Limits) -> list[str]:
    header = [
        "slots",
        "chunks/job",
        "job s p50/max",
        "ideal s",
        "job/ideal p50/max",
        "last post/ideal max",
        "posts/s",
        "posts/s / global",
        "429 channel",
        "429 global",
        "429 seen by service",
        "wasted MiB (est.)",
        "finish lag max ms",
        "client non-200",
    ]
    rows = []
    for run in runs:
        f = run.figures(limits)
        rows.append(
            [
                run.slots,
                run.chunks,
                f"{f['job_s_median']:.2f}/{f['job_s_max']:.2f}",
                f"{f['ideal_s']:.2f}",
                f"{f['job_vs_ideal_median']:.2f}/{f['job_vs_ideal_max']:.2f}",
                f"{f['last_post_vs_ideal_max']:.2f}",
                f"{f['posts_per_s']:.1f}",
                f"{f['posts_per_s_vs_global']:.2f}",
                run.channel_429s,
                "n/a",
                run.service_429s,
                f"{f['wasted_mib_estimate']:.2f}",
                f"{f['finish_lag_ms_max']:.0f}",
                statuses_text(run.client_statuses),
            ]
        )
    return table(header, rows)
