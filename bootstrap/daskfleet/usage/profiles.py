"""A task prefix's statistical profile, kept as a page: what ``daskfleet profile CLUSTER --prefix P`` saves.

The workers' own profiler (distributed's, sampling every worker thread every 10 ms and keying the
samples by task prefix) keeps about the last ``low-level-log-length`` cycles (1000 s by default) of
each worker. The scheduler operation ``daskfleet_profile`` merges them for one prefix, as the
dashboard's profile page does, and says which time the samples can cover: from the oldest cycle a
worker still holds to now (workers that left took theirs with them). The client renders the flame
graph the dashboard draws (``distributed.profile.plot_figure``) into one HTML file with Bokeh's code
inline, so it opens anywhere, offline and long after.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..conventions import PROFILE_OP  # noqa: F401  (re-exported: the scheduler operation, any user certificate)

#: The name of the flame graph's data source in the page (one rectangle per row).
FLAME_SOURCE = "daskfleet-flame"


def utc(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def window_text(result: dict[str, Any]) -> str:
    """``2026-11-20 10:02:11 UTC – 2026-11-20 10:18:51 UTC``: the time the profile covers."""
    return f"{utc(result['start'])} – {utc(result['end'])}"


def profile_window(cycle_times: Iterable[float], series: Sequence[Sequence[float]], now: float, cycle_s: float
                   ) -> dict[str, float | None]:
    """What a merged profile covers: from the start of the oldest profile cycle any worker holds (``cycle_times``:
    when each held cycle ended) to ``now``; and when the prefix's samples fall (``series``: [cycle end, samples])."""
    oldest = min(cycle_times, default=now)
    sampled = [moment for moment, count in series if count]
    return {
        "start": min(oldest - cycle_s, now),
        "end": now,
        "samples_from": max(min(sampled) - cycle_s, oldest - cycle_s) if sampled else None,
        "samples_to": min(max(sampled) + cycle_s, now) if sampled else None,
    }


async def prefix_profile(scheduler: Any, prefix: Any) -> dict[str, Any]:
    """The scheduler operation: ``prefix``'s profile merged over the workers, its window, and the prefixes sampled."""
    import dask  # noqa: PLC0415  (this module is also the client's, which imports it for the page alone)
    from dask.utils import parse_timedelta  # noqa: PLC0415

    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix: a task prefix name is required, got {prefix!r}")
    cycle_s = parse_timedelta(dask.config.get("distributed.worker.profile.cycle"), default="ms")
    interval_s = parse_timedelta(dask.config.get("distributed.worker.profile.interval"), default="ms")
    kept_s = cycle_s * dask.config.get("distributed.admin.low-level-log-length")
    metadata = await scheduler.get_profile_metadata()
    state = await scheduler.get_profile(key=prefix)
    now = time.time()  # the workers stamp their cycles in the scheduler's time
    series = metadata["keys"].get(prefix, [])
    return {
        "prefix": prefix, "profile": state, "samples": state.get("count", 0), "interval_s": interval_s,
        "cycle_s": cycle_s, "kept_s": kept_s, "workers": len(scheduler.workers), "series": series,
        "sampled_prefixes": most_sampled(metadata["keys"]),
        **profile_window((moment for moment, _ in metadata["counts"]), series, now, cycle_s),
    }


def most_sampled(series: dict[str, Sequence[Sequence[float]]], count: int = 20) -> list[str]:
    """The ``count`` prefixes with the most samples, most first (to say what there is when a name has none)."""
    totals = {name: sum(samples for _, samples in points) for name, points in series.items()}
    return [name for name, total in sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count] if total]


def serve(scheduler: Any, guard: Any) -> None:
    """Answer ``daskfleet_profile`` behind the guard (user certificates; not task clients)."""

    async def handler(prefix: Any = None) -> dict[str, Any]:
        return await prefix_profile(scheduler, prefix)

    guard.add_handler(PROFILE_OP, handler)


def render_page(result: dict[str, Any], cluster: str) -> str:
    """The standalone page: what it shows and when, the flame graph, and the prefix's samples over time."""
    from bokeh.embed import file_html  # noqa: PLC0415
    from bokeh.layouts import column  # noqa: PLC0415
    from bokeh.models import Div  # noqa: PLC0415
    from bokeh.plotting import figure  # noqa: PLC0415
    from bokeh.resources import INLINE  # noqa: PLC0415
    from distributed import profile  # noqa: PLC0415

    prefix = result["prefix"]
    data = profile.plot_data(result["profile"], result["interval_s"])
    flame, source = profile.plot_figure(data, height=520, sizing_mode="stretch_width")
    source.name = FLAME_SOURCE
    flame.title.text = f"{prefix}: where its tasks spent their time (hover a bar for its function and line)"
    timeline = figure(height=170, sizing_mode="stretch_width", x_axis_type="datetime", tools="xpan,xwheel_zoom,reset",
                      title=f"samples of {prefix} per profile cycle", x_range=(result["start"] * 1000, result["end"] * 1000))
    moments = [moment * 1000 for moment, _ in result["series"]]
    timeline.vbar(x=moments, top=[count for _, count in result["series"]], width=result["cycle_s"] * 900, color="#3b6ea5")
    timeline.yaxis.axis_label = "samples"
    header = Div(text=_header_html(result, cluster), sizing_mode="stretch_width")
    title = f"daskfleet profile: {prefix} on {cluster}"
    return file_html(column(header, flame, timeline, sizing_mode="stretch_width"), INLINE, title)


def _header_html(result: dict[str, Any], cluster: str) -> str:
    seconds = result["samples"] * result["interval_s"]
    sampled = (f"{utc(result['samples_from'])} – {utc(result['samples_to'])}" if result["samples_from"] is not None
               else "none in this window")
    kept = (f" (what the workers still held: each keeps its last {result['kept_s'] / 60:.0f} minutes of samples; "
            "workers that left took theirs with them)")
    rows = [
        ("window", f"<span id='daskfleet-window'>{html.escape(window_text(result))}</span>{html.escape(kept)}"),
        ("samples", html.escape(f"{result['samples']:,} (one every {result['interval_s'] * 1000:g} ms of a running task: "
                                f"about {seconds:,.1f} s of task time) from {result['workers']} worker(s)")),
        ("prefix sampled", html.escape(sampled)),
        ("saved", html.escape(utc(time.time()))),
    ]
    cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return (f"<h2>Profile of <code>{html.escape(result['prefix'])}</code> on cluster <code>{html.escape(cluster)}</code></h2>"
            f"<table>{cells}</table>")
