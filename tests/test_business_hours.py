"""Business time: hand-worked examples, every schedule error, and properties against an oracle.

The oracle walks the interval minute by minute (partial minutes at the ends), converts each
minute to local time with zoneinfo and asks whether that wall time is in an opening interval
of its local date. It shares no code with stream.business_hours.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.business_hours import (
    Schedule,
    ScheduleError,
    Schedules,
    load_schedules,
    parse_schedules,
)

HOUR = 3600

CONTRACT_EXAMPLE = """
default:                       # every team without an entry of its own
  timezone: Europe/Berlin      # IANA name; opening hours are local time, daylight saving included
  hours:                       # day (mon..sun) or day range (mon-fri) -> local HH:MM-HH:MM intervals
    mon-fri: ["09:00-17:00"]
    sat: ["10:00-14:00"]
  holidays: ["2026-12-25", "2026-12-26"]   # local dates closed all day
teams:
  billing:
    timezone: America/New_York
    hours: {mon-fri: ["08:00-12:00", "13:00-18:00"]}
"""


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def local(zone: str, year: int, month: int, day: int, hour: int = 0) -> float:
    """A local wall time that exists once (not in a DST gap or repeat)."""
    return datetime(year, month, day, hour, tzinfo=ZoneInfo(zone)).timestamp()


def schedule(text: str) -> Schedule:
    """The default schedule of a file whose default is `text` (indented YAML lines)."""
    return parse_schedules("default:\n" + text).default


def hours(value: float) -> float:
    return value / HOUR


# --- hand-worked examples -------------------------------------------------------------------

BERLIN_OFFICE = schedule("""
  timezone: Europe/Berlin
  hours: {mon-fri: ["09:00-17:00"]}
  holidays: ["2026-12-24", "2026-12-25"]
""")


def test_a_weekend_is_not_business_time() -> None:
    # Friday 2026-03-06 18:00 -> Monday 2026-03-09 09:00: closed throughout
    assert (
        BERLIN_OFFICE.business_seconds(
            local("Europe/Berlin", 2026, 3, 6, 18), local("Europe/Berlin", 2026, 3, 9, 9)
        )
        == 0
    )
    # Friday 16:00 -> Monday 10:00: the last hour of Friday and the first of Monday
    assert (
        BERLIN_OFFICE.business_seconds(
            local("Europe/Berlin", 2026, 3, 6, 16), local("Europe/Berlin", 2026, 3, 9, 10)
        )
        == 2 * HOUR
    )


def test_holidays_are_closed_all_day() -> None:
    # Wed 2026-12-23 12:00 -> Mon 12-28 12:00: Wed 12-17 (5h), Thu and Fri holidays,
    # the weekend closed, Mon 09-12 (3h)
    assert (
        BERLIN_OFFICE.business_seconds(
            local("Europe/Berlin", 2026, 12, 23, 12), local("Europe/Berlin", 2026, 12, 28, 12)
        )
        == 8 * HOUR
    )
    # inside a holiday nothing counts
    assert (
        BERLIN_OFFICE.business_seconds(
            local("Europe/Berlin", 2026, 12, 24, 8), local("Europe/Berlin", 2026, 12, 24, 18)
        )
        == 0
    )


def test_empty_and_reversed_intervals_are_zero() -> None:
    moment = local("Europe/Berlin", 2026, 3, 4, 10)
    assert BERLIN_OFFICE.business_seconds(moment, moment) == 0
    assert BERLIN_OFFICE.business_seconds(moment + 60, moment) == 0
    with pytest.raises(ValueError, match="finite"):
        BERLIN_OFFICE.business_seconds(moment, float("inf"))


def test_fractions_of_a_second_count() -> None:
    opening = local("Europe/Berlin", 2026, 3, 4, 9)
    assert BERLIN_OFFICE.business_seconds(opening - 10.5, opening + 2.25) == 2.25
    closing = local("Europe/Berlin", 2026, 3, 4, 17)
    assert BERLIN_OFFICE.business_seconds(closing - 0.75, closing + 99.5) == 0.75


SUNDAY_NIGHTS = """
  timezone: {zone}
  hours: {{sun: ["{interval}"]}}
"""


@pytest.mark.parametrize(
    ("zone", "day", "interval", "expected_hours"),
    [
        # Berlin springs forward on 2026-03-29 at 02:00 CET -> 03:00 CEST: 02:00-03:00 never happens
        ("Europe/Berlin", date(2026, 3, 29), "02:00-03:00", 0),
        ("Europe/Berlin", date(2026, 3, 29), "01:00-04:00", 2),
        ("Europe/Berlin", date(2026, 3, 29), "00:00-24:00", 23),
        # Berlin falls back on 2026-10-25 at 03:00 CEST -> 02:00 CET: 02:00-03:00 happens twice
        ("Europe/Berlin", date(2026, 10, 25), "01:00-03:00", 3),
        ("Europe/Berlin", date(2026, 10, 25), "02:30-02:45", 0.5),
        ("Europe/Berlin", date(2026, 10, 25), "00:00-24:00", 25),
        # New York springs forward on 2026-03-08 at 02:00 EST -> 03:00 EDT
        ("America/New_York", date(2026, 3, 8), "00:00-03:00", 2),
        ("America/New_York", date(2026, 3, 8), "02:15-02:45", 0),
        # and falls back on 2026-11-01 at 02:00 EDT -> 01:00 EST: 01:00-02:00 happens twice
        ("America/New_York", date(2026, 11, 1), "00:00-03:00", 4),
        ("America/New_York", date(2026, 11, 1), "01:00-02:00", 2),
        ("America/New_York", date(2026, 11, 1), "00:00-24:00", 25),
    ],
)
def test_daylight_saving_counts_real_elapsed_seconds(
    zone: str, day: date, interval: str, expected_hours: float
) -> None:
    sunday = schedule(SUNDAY_NIGHTS.format(zone=zone, interval=interval))
    # the whole weekend around the change, measured in UTC to stay clear of the ambiguity
    start = utc(day.year, day.month, day.day) - 2 * 86400
    end = utc(day.year, day.month, day.day) + 2 * 86400
    assert hours(sunday.business_seconds(start, end)) == expected_hours


def test_a_ticket_inside_the_repeated_hour() -> None:
    sunday = schedule(SUNDAY_NIGHTS.format(zone="Europe/Berlin", interval="02:00-03:00"))
    # 00:30 UTC is 02:30 CEST; 01:30 UTC is 02:30 CET: a real hour, all of it 02:xx local
    assert sunday.business_seconds(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)) == HOUR
    # 01:00 UTC is the change itself: 30 minutes before it and 30 after
    assert sunday.business_seconds(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1)) == HOUR / 2


def test_weekday_hours_across_a_dst_weekend() -> None:
    office = schedule("""
  timezone: America/New_York
  hours: {mon-fri: ["09:00-17:00"]}
""")
    # Fri 2026-03-06 16:00 EST -> Mon 03-09 10:00 EDT: 66 wall hours, 65 real, 2 in business
    start, end = (
        local("America/New_York", 2026, 3, 6, 16),
        local("America/New_York", 2026, 3, 9, 10),
    )
    assert end - start == 65 * HOUR
    assert office.business_seconds(start, end) == 2 * HOUR


NIGHT_SHIFT = schedule("""
  timezone: Europe/Berlin
  hours:
    mon-fri: ["22:00-24:00"]
    tue-sat: ["00:00-06:00"]
  holidays: ["2026-03-10"]
""")


def test_a_night_shift_is_two_intervals_on_two_days() -> None:
    zone = "Europe/Berlin"
    # Mon 2026-03-02 23:00 -> Tue 05:00: all six hours are the shift
    assert (
        NIGHT_SHIFT.business_seconds(local(zone, 2026, 3, 2, 23), local(zone, 2026, 3, 3, 5))
        == 6 * HOUR
    )
    # Tue 05:00 -> Tue 23:00: the shift's last hour and the next one's first
    assert (
        NIGHT_SHIFT.business_seconds(local(zone, 2026, 3, 3, 5), local(zone, 2026, 3, 3, 23))
        == 2 * HOUR
    )
    # a Tuesday holiday closes only that date: Mon 23:00 -> Tue 05:00 keeps Monday's hour
    assert (
        NIGHT_SHIFT.business_seconds(local(zone, 2026, 3, 9, 23), local(zone, 2026, 3, 10, 5))
        == HOUR
    )
    # Sat 06:00 -> Mon 22:00: closed
    assert (
        NIGHT_SHIFT.business_seconds(local(zone, 2026, 3, 7, 6), local(zone, 2026, 3, 9, 22)) == 0
    )


def test_an_interval_may_end_at_midnight() -> None:
    late = schedule("""
  timezone: UTC
  hours: {sat: ["20:00-24:00"]}
""")
    # Sat 2026-03-07 23:00 -> Sun 01:00
    assert late.business_seconds(utc(2026, 3, 7, 23), utc(2026, 3, 8, 1)) == HOUR
    assert late.hours[5] == ((20 * HOUR, 24 * HOUR),)


def test_six_months_against_a_calendar_count() -> None:
    office = schedule("""
  timezone: Europe/Berlin
  hours: {mon-fri: ["09:00-17:00"]}
  holidays: ["2026-04-03", "2026-04-06", "2026-05-01", "2026-05-02"]
""")
    days = [date(2026, 1, 1) + timedelta(days=n) for n in range(181)]  # Jan 1 .. Jun 30
    working = [day for day in days if day.weekday() < 5 and day not in office.holidays]
    assert len(working) == 126
    start, end = local("Europe/Berlin", 2026, 1, 1), local("Europe/Berlin", 2026, 7, 1)
    assert office.business_seconds(start, end) == len(working) * 8 * HOUR


def test_six_months_cost_well_under_a_millisecond() -> None:
    office = parse_schedules(CONTRACT_EXAMPLE).default
    start, end = utc(2026, 1, 3, 12), utc(2026, 7, 3, 12)
    office.business_seconds(start, end)  # offset changes are found once per zone and year
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(100):
            office.business_seconds(start, end)
        best = min(best, (time.perf_counter() - began) / 100)
    assert best < 250e-6, f"{best * 1e6:.0f} us per call"


# --- parsing --------------------------------------------------------------------------------


def test_the_contract_example() -> None:
    schedules = parse_schedules(CONTRACT_EXAMPLE)
    office = [((9 * HOUR, 17 * HOUR),)] * 5
    assert schedules.default == Schedule(
        "Europe/Berlin",
        [*office, ((10 * HOUR, 14 * HOUR),), ()],
        [date(2026, 12, 25), date(2026, 12, 26)],
    )
    billing = schedules.for_team("billing")
    assert billing.timezone == "America/New_York"
    assert billing.hours[0] == ((8 * HOUR, 12 * HOUR), (13 * HOUR, 18 * HOUR))
    assert billing.hours[5:] == ((), ())
    assert billing.holidays == frozenset()  # the default's holidays are not inherited
    assert schedules.for_team("unassigned") is schedules.default


def test_a_team_entry_replaces_the_default_but_inherits_its_timezone() -> None:
    schedules = parse_schedules("""
default:
  timezone: Europe/Berlin
  hours: {mon-fri: ["09:00-17:00"]}
  holidays: ["2026-12-25"]
teams:
  support:
    hours: {mon-sun: ["08:00-20:00"]}
    holidays: ["2026-12-24"]
""")
    support = schedules.for_team("support")
    assert support.timezone == "Europe/Berlin"
    assert support.holidays == {date(2026, 12, 24)}
    zone = "Europe/Berlin"
    # Christmas Day 2026 is a Friday: closed for the default, open 12h for support
    christmas = local(zone, 2026, 12, 25), local(zone, 2026, 12, 26)
    assert schedules.default.business_seconds(*christmas) == 0
    assert support.business_seconds(*christmas) == 12 * HOUR
    eve = local(zone, 2026, 12, 24), local(zone, 2026, 12, 25)
    assert schedules.default.business_seconds(*eve) == 8 * HOUR
    assert support.business_seconds(*eve) == 0


def test_day_ranges_wrap_and_days_join() -> None:
    parsed = schedule("""
  timezone: UTC
  hours:
    Fri-Mon: ["10:00-11:00"]
    fri: "12:00-13:00"
    wed: ["09:00-12:00", "12:00-13:00"]
    thu: []
""")
    ten = (10 * HOUR, 11 * HOUR)
    assert parsed.hours == (
        (ten,),
        (),
        ((9 * HOUR, 13 * HOUR),),  # touching intervals are one
        (),
        (ten, (12 * HOUR, 13 * HOUR)),
        (ten,),
        (ten,),
    )


def test_unquoted_dates_and_empty_optional_parts() -> None:
    schedules = parse_schedules("""
default:
  timezone: UTC
  hours: {}
  holidays:
    - 2026-12-25
teams:
""")
    assert schedules.default.holidays == {date(2026, 12, 25)}
    assert schedules.teams == {}
    assert schedules.default.business_seconds(0, 10**9) == 0


def test_load_schedules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "hours.yaml"
    path.write_text(CONTRACT_EXAMPLE, encoding="utf-8")
    assert isinstance(load_schedules(path), Schedules)
    assert load_schedules(str(path)) == parse_schedules(CONTRACT_EXAMPLE)
    with pytest.raises(ScheduleError, match=r"missing\.yaml: cannot read the business-hours file"):
        load_schedules(tmp_path / "missing.yaml")


def entry(hours: str = '{mon-fri: ["09:00-17:00"]}', extra: str = "") -> str:
    return f"default:\n  timezone: Europe/Berlin\n  hours: {hours}\n{extra}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "hours.yaml: the file is empty; expected a 'default:' schedule"),
        ("# nothing yet\n", "hours.yaml: the file is empty"),
        (
            "default: [unclosed\n",
            "hours.yaml: line 2, column 1: not valid YAML: expected ',' or ']'",
        ),
        ("default:\n\tbad: tab\n", "hours.yaml: line 2, column 1: not valid YAML"),
        (
            entry('{mon: ["09:00-12:00"], mon: ["13:00-17:00"]}'),
            "hours.yaml: line 3, column 33: not valid YAML: 'mon' is given twice in the same mapping",
        ),
        (
            "- default\n",
            "hours.yaml: expected a mapping with 'default:' and optional 'teams:', got a list",
        ),
        (
            "teams: {}\n",
            "hours.yaml: missing 'default:', the schedule of every team without its own",
        ),
        (
            entry() + "defaults: {}\n",
            "hours.yaml: defaults: unknown key; expected one of default, teams; did you mean 'default'?",
        ),
        (
            entry(extra="  holiday: []\n"),
            "hours.yaml: default.holiday: unknown key; expected one of timezone, hours, holidays; did you mean 'holidays'?",
        ),
        (
            entry() + "teams: {billing: {hours: {}, tz: UTC}}\n",
            "hours.yaml: teams.billing.tz: unknown key; expected one of timezone, hours, holidays",
        ),
        (
            "default: {hours: {}}\n",
            "hours.yaml: default: missing 'timezone' (an IANA name like Europe/Berlin)",
        ),
        (
            "default: {timezone: Europe/Berln, hours: {}}\n",
            "hours.yaml: default.timezone: 'Europe/Berln' is not a known IANA time zone like Europe/Berlin",
        ),
        (
            "default: {timezone: europe/berlin, hours: {}}\n",
            "hours.yaml: default.timezone: 'europe/berlin' is not a known IANA time zone; did you mean Europe/Berlin?",
        ),
        (
            "default: {timezone: ../../etc/passwd, hours: {}}\n",
            "hours.yaml: default.timezone: '../../etc/passwd' is not a known IANA time zone",
        ),
        (
            "default: {timezone: 1, hours: {}}\n",
            "hours.yaml: default.timezone: 1 is not an IANA time zone name like Europe/Berlin",
        ),
        (
            "default: {timezone: UTC}\n",
            "hours.yaml: default: missing 'hours' (like {mon-fri: ['09:00-17:00']}; {} if never open)",
        ),
        (
            entry() + "teams: {billing: {timezone: UTC}}\n",
            "hours.yaml: teams.billing: missing 'hours' (like {mon-fri: ['09:00-17:00']}; {} if never open); a team's entry replaces the default entirely",
        ),
        (
            entry("[mon]"),
            "hours.yaml: default.hours: expected a mapping like {mon-fri: ['09:00-17:00']}, got a list",
        ),
        (
            entry('{mon-fry: ["09:00-17:00"]}'),
            "hours.yaml: default.hours.mon-fry: 'fry' is not a day; expected mon, tue, wed, thu, fri, sat, sun or a range like mon-fri",
        ),
        (
            entry('{monday: ["09:00-17:00"]}'),
            "hours.yaml: default.hours.monday: 'monday' is not a day",
        ),
        (entry('{1: ["09:00-17:00"]}'), "hours.yaml: default.hours.1: 1 is not a day"),
        (
            entry('{mon-mon: ["09:00-17:00"]}'),
            "hours.yaml: default.hours.mon-mon: a range needs two different days; write 'mon'",
        ),
        (
            entry("{mon: 9}"),
            'hours.yaml: default.hours.mon: expected a list of "HH:MM-HH:MM" intervals, got 9',
        ),
        (
            entry("{mon: }"),
            'hours.yaml: default.hours.mon: expected a list of "HH:MM-HH:MM" intervals, got nothing',
        ),
        (
            entry('{mon-fri: ["09:00-17:00"], fri: ["16:00-18:00"]}'),
            "hours.yaml: default.hours.fri[0]: '16:00-18:00' overlaps '09:00-17:00' (default.hours.mon-fri[0]) on fri",
        ),
        (
            entry('{sat: ["10:00-14:00", "09:00-10:30"]}'),
            "hours.yaml: default.hours.sat[1]: '09:00-10:30' overlaps '10:00-14:00' (default.hours.sat[0]) on sat",
        ),
        (
            entry('{mon: ["9am-5pm"]}'),
            "hours.yaml: default.hours.mon[0]: '9am-5pm' is not an interval like \"09:00-17:00\"",
        ),
        (
            entry('{mon: ["09:00"]}'),
            "hours.yaml: default.hours.mon[0]: '09:00' is not an interval like \"09:00-17:00\"",
        ),
        (
            entry("{mon: [540]}"),
            'hours.yaml: default.hours.mon[0]: 540 is not an interval like "09:00-17:00" (quote it)',
        ),
        (
            entry('{mon: ["09:00-25:00"]}'),
            "hours.yaml: default.hours.mon[0]: '09:00-25:00': 25:00 is not a time of day (00:00 to 24:00)",
        ),
        (
            entry('{mon: ["09:60-10:00"]}'),
            "hours.yaml: default.hours.mon[0]: '09:60-10:00': 09:60 is not a time of day (00:00 to 24:00)",
        ),
        (
            entry('{mon: ["22:00-24:30"]}'),
            "hours.yaml: default.hours.mon[0]: '22:00-24:30': 24:30 is not a time of day",
        ),
        (
            entry('{mon: ["24:00-24:00"]}'),
            "hours.yaml: default.hours.mon[0]: '24:00-24:00' starts at 24:00; only an interval's end may be 24:00",
        ),
        (
            entry() + 'teams:\n  billing:\n    hours: {mon-fri: ["08:00-12:00", "13:00-12:00"]}\n',
            "hours.yaml: teams.billing.hours.mon-fri[1]: '13:00-12:00' ends before it starts; a night shift is two intervals, e.g. 22:00-24:00 and 00:00-06:00 next day",
        ),
        (
            entry('{mon: ["09:00-09:00"]}'),
            "hours.yaml: default.hours.mon[0]: '09:00-09:00' is empty: it ends when it starts",
        ),
        (
            entry(extra="  holidays: 2026-12-25\n"),
            'hours.yaml: default.holidays: expected a list of dates like ["2026-12-25"], got 2026-12-25',
        ),
        (
            entry(extra='  holidays: ["2026-12-24", "2026-13-01"]\n'),
            "hours.yaml: default.holidays[1]: '2026-13-01' is not a date like 2026-12-25",
        ),
        (
            entry(extra='  holidays: ["2026-02-30"]\n'),
            "hours.yaml: default.holidays[0]: '2026-02-30' is not a date like 2026-12-25",
        ),
        (
            entry(extra='  holidays: ["25.12.2026"]\n'),
            "hours.yaml: default.holidays[0]: '25.12.2026' is not a date like 2026-12-25",
        ),
        (
            entry(extra="  holidays: [2026-12-25T10:00:00Z]\n"),
            "hours.yaml: default.holidays[0]: 2026-12-25 10:00:00+00:00 is not a date like 2026-12-25",
        ),
        (
            entry() + "teams: [billing]\n",
            "hours.yaml: teams: expected a mapping of team name -> entry, got a list",
        ),
        (
            entry() + "teams: {billing: }\n",
            "hours.yaml: teams.billing: expected a mapping with hours (and timezone, holidays), got nothing",
        ),
        (
            entry() + "teams: {42: {hours: {}}}\n",
            "hours.yaml: teams: team name 42 is not a non-empty string; quote it",
        ),
    ],
)
def test_schedule_errors_name_the_place_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedules(text, "hours.yaml")
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value, ValueError)


# --- properties against an independent oracle -----------------------------------------------

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",  # southern hemisphere, DST until 2019
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30 / -02:30
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Asia/Tehran",
    "UTC",
]
Week = dict[int, list[tuple[int, int]]]
"""weekday (Monday 0) -> opening intervals in minutes after local midnight"""


def oracle(zone: str, week: Week, holidays: set[date], start: int, end: int) -> int:
    """Walk [start, end) minute by minute: a UTC minute is all open or all closed, since
    these zones' offsets and changes (after 1970) fall on whole minutes."""
    tz = ZoneInfo(zone)
    total = 0
    moment = start
    while moment < end:
        following = min(end, (moment // 60 + 1) * 60)
        wall = datetime.fromtimestamp(moment, tz)
        offset = wall.utcoffset()
        assert offset is not None and offset.total_seconds() % 60 == 0
        minute = wall.hour * 60 + wall.minute
        if wall.date() not in holidays and any(
            first <= minute < last for first, last in week.get(wall.weekday(), [])
        ):
            total += following - moment
        moment = following
    return total


def clock(minutes: int) -> str:
    return f"{minutes // 60:02}:{minutes % 60:02}"


def schedule_yaml(zone: str, week: Week, holidays: set[date]) -> str:
    names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    default = {
        "timezone": zone,
        "hours": {
            names[day]: [f"{clock(a)}-{clock(b)}" for a, b in intervals]
            for day, intervals in week.items()
        },
        "holidays": sorted(day.isoformat() for day in holidays),
    }
    return "default: " + json.dumps(default)  # JSON is YAML


boundaries = st.integers(0, 1440) | st.sampled_from([0, 60, 90, 120, 150, 180, 240, 1380, 1440])


@st.composite
def weeks(draw: st.DrawFn) -> Week:
    week: Week = {}
    for day in range(7):
        count = draw(st.integers(0, 3))
        points = sorted(draw(st.sets(boundaries, min_size=2 * count, max_size=2 * count)))
        if count or draw(st.booleans()):
            week[day] = list(zip(points[::2], points[1::2], strict=True))
    return week


MONTHS = [1, 3, 3, 4, 4, 6, 9, 10, 10, 11, 11, 12]
SPECIAL = [utc(2011, 12, 29, 10), utc(2019, 2, 17, 2), utc(2026, 4, 5, 15)]


@st.composite
def spans(draw: st.DrawFn, longest: int = 14 * 86400) -> tuple[int, int]:
    if draw(st.integers(0, 9)) == 0:
        start = int(draw(st.sampled_from(SPECIAL))) + draw(st.integers(-3 * 86400, 3 * 86400))
    else:
        year = draw(st.integers(2000, 2037))
        month = draw(st.sampled_from(MONTHS))
        day = draw(st.integers(1, 28))
        start = int(utc(year, month, day)) + draw(st.integers(0, 86399))
    length = draw(st.integers(0, 6 * HOUR) | st.integers(0, 3 * 86400) | st.integers(0, longest))
    if draw(st.booleans()):  # whole minutes, like most real boundaries
        start -= start % 60
        length -= length % 60
    return start, start + length


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, Week, set[date], int, int]:
    zone = draw(st.sampled_from(ZONES))
    week = draw(weeks())
    start, end = draw(spans())
    first = datetime.fromtimestamp(start, UTC).date() - timedelta(days=1)
    days = (end - start) // 86400 + 3
    holidays = draw(
        st.sets(st.integers(0, days).map(lambda n: first + timedelta(days=n)), max_size=4)
    )
    return zone, week, holidays, start, end


@settings(max_examples=250, deadline=None)
@given(cases())
def test_business_seconds_match_the_minute_walk(
    case: tuple[str, Week, set[date], int, int],
) -> None:
    zone, week, holidays, start, end = case
    parsed = parse_schedules(schedule_yaml(zone, week, holidays)).default
    assert parsed.business_seconds(start, end) == oracle(zone, week, holidays, start, end)


@settings(max_examples=200, deadline=None)
@given(cases(), st.integers(0, 10**6), st.integers(0, 10**6))
def test_business_time_adds_up(
    case: tuple[str, Week, set[date], int, int], cut: int, stretch: int
) -> None:
    zone, week, holidays, start, end = case
    parsed = parse_schedules(schedule_yaml(zone, week, holidays)).default
    end += stretch * 60  # up to about two years
    middle = start + cut * (end - start) // 10**6
    whole = parsed.business_seconds(start, end)
    assert whole == parsed.business_seconds(start, middle) + parsed.business_seconds(middle, end)
    assert 0 <= whole <= end - start
    fraction = start + (end - start) * 0.375
    assert whole == pytest.approx(
        parsed.business_seconds(start, fraction) + parsed.business_seconds(fraction, end),
        abs=1e-6,
    )


ALL_ZONES = sorted(available_timezones())


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(ALL_ZONES),
    st.integers(int(utc(1890, 1, 1)), int(utc(2100, 1, 1))),
    st.integers(0, 400 * 86400),
)
def test_always_open_is_elapsed_time_in_every_zone(zone: str, start: int, length: int) -> None:
    always = Schedule(zone, [[(0, 86400)]] * 7)
    never = Schedule(zone, [[]] * 7)
    assert always.business_seconds(start, start + length) == length
    assert never.business_seconds(start, start + length) == 0
