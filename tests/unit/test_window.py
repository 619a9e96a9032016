"""write/window.py: parts in flight per streamed file grow while that pays."""

from s3pvefs.write.window import InflightWindow

MiB = 1 << 20


def run(window: InflightWindow, seconds_per_part) -> list[int]:
    """Parts of 8 MiB completing; seconds_per_part(limit) is how long the link takes per
    part at that window (the writer always waits for a slot). Returns the limits seen."""
    now, limits = 0.0, []
    window.started(now)
    for _ in range(200):
        assert window.full(window.limit)  # the writer found every slot busy
        now += seconds_per_part(window.limit)
        window.completed(8 * MiB, now)
        limits.append(window.limit)
    return limits


def test_a_distant_server_gets_the_window_doubled_up_to_the_most():
    # latency-bound: throughput proportional to parts in flight
    limits = run(InflightWindow(4, 16), lambda limit: 1.0 / limit)
    assert limits[0] == 4 and max(limits) == 16
    assert limits.index(16) < 30  # within 4 + 8 parts, not hundreds


def test_a_near_server_keeps_the_window_once_more_buys_nothing():
    limits = run(InflightWindow(4, 16), lambda limit: 0.05)  # server-bound: same rate at any window
    assert max(limits) == 8  # one doubling tried, bought nothing, kept
    assert limits[-1] == 8


def test_no_growth_while_the_writer_is_the_limit():
    w = InflightWindow(4, 16)
    now = 0.0
    for _ in range(100):
        assert not w.full(2)  # slots free: the writer is slower than the uploads
        now += 0.01
        w.completed(8 * MiB, now)
    assert w.limit == 4


def test_the_window_never_starts_below_one_or_above_its_most():
    assert InflightWindow(0, 16).limit == 1
    w = InflightWindow(8, 4)
    assert w.limit == 8 and max(run(w, lambda limit: 1.0 / limit)) == 8
