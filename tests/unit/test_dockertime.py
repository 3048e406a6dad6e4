"""ownvol.dockertime: the engine's RFC 3339 stamps and "ago"."""

import pytest

from ownvol.dockertime import ago, state_time, state_time_ns, timestamp_ns


def test_nanoseconds_are_kept_beyond_what_datetime_holds():
    assert timestamp_ns("2026-11-26T05:50:16.000000001Z") - timestamp_ns("2026-11-26T05:50:16Z") == 1
    assert timestamp_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000


def test_an_offset_is_applied_and_no_zone_reads_as_utc():
    assert timestamp_ns("2026-11-26T06:50:16.25+01:00") == timestamp_ns("2026-11-26T05:50:16.25Z")
    assert timestamp_ns("2026-11-26T03:20:16-02:30") == timestamp_ns("2026-11-26T05:50:16Z")
    assert timestamp_ns("2026-11-26T05:50:16") == timestamp_ns("2026-11-26T05:50:16Z")


@pytest.mark.parametrize("stamp", ["", "yesterday", "2026-11-26 05:50:16Z", "2026-11-26T05:50:16.1234567890Z"])
def test_a_stamp_the_engine_does_not_write_is_refused(stamp):
    with pytest.raises(ValueError, match="RFC 3339"):
        timestamp_ns(stamp)


def test_state_times_of_a_container_never_started_are_none():
    assert state_time_ns("0001-01-01T00:00:00Z") == 0
    assert state_time(None) is None and state_time("") is None and state_time("garbage") is None
    assert state_time("2026-11-30T04:28:38.4741Z") == pytest.approx(timestamp_ns("2026-11-30T04:28:38Z") / 1e9 + 0.4741)


def test_ago_tells_one_unit():
    now = 1_000_000.0
    assert ago(None, now) == "" and ago(0, now) == ""
    assert ago(now - 42, now) == "42s"
    assert ago(now - 119, now) == "119s"
    assert ago(now - 300, now) == "5m"
    assert ago(now - 3 * 3600, now) == "3h"
    assert ago(now - 5 * 86400, now) == "5d"
    assert ago(now + 10, now) == "0s"
