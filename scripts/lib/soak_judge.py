"""Judges a soak run's memory samples by their trend, not their wobble.

A long-running server's RSS breathes (allocator caches, pooled buffers
given back and taken again): a 10 MiB process moving between 9.2 and
10.6 MiB with no direction is healthy. A leak is growth with a direction.
So a run fails only when both of these exceed a floor:
- the least-squares slope over the judged samples, times their span
  (how much the fitted line rose over the run), and
- the median of the last third of the samples minus the median of the
  first third (the same growth, robust to a spike at either end).
The floor is the larger of `floor_mib` and `floor_share` of the median.
Descriptors must not trend upwards either (floor: 0 descriptors beyond
the first third's maximum).
"""
import statistics


def slope(xs, ys):
    """Least-squares slope of ys over xs (0 for fewer than 2 points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def judge(samples, warm_s=0.0, floor_mib=1.0, floor_share=0.05):
    """samples: [(seconds, rss_mib, fds)]. Returns (ok, summary dict)."""
    rows = [s for s in samples if s[0] >= warm_s]
    if len(rows) < 6:
        return False, {"reason": f"too few samples after the warm-up ({len(rows)})"}
    t = [r[0] for r in rows]
    rss = [r[1] for r in rows]
    fds = [r[2] for r in rows]
    median = statistics.median(rss)
    floor = max(floor_mib, floor_share * median)
    third = max(1, len(rows) // 3)
    fitted_growth = slope(t, rss) * (t[-1] - t[0])
    thirds_growth = statistics.median(rss[-third:]) - statistics.median(rss[:third])
    leak = fitted_growth > floor and thirds_growth > floor / 2
    fd_growth = max(fds[-third:]) - max(fds[:third])
    ok = not leak and fd_growth <= 0
    return ok, {
        "samples": len(rows),
        "rss_min": min(rss),
        "rss_max": max(rss),
        "rss_median": median,
        "fitted_growth_mib": fitted_growth,
        "thirds_growth_mib": thirds_growth,
        "floor_mib": floor,
        "fd_growth": fd_growth,
        "reason": "RSS grows" if leak else ("descriptors grow" if fd_growth > 0 else "flat"),
    }
