"""Business time: the seconds of an interval that fall inside a team's opening hours.

`CX_BUSINESS_HOURS` names a YAML file (contract, section 3):

    default:                        # required: every team without an entry of its own
      timezone: Europe/Berlin       # required in `default`: an IANA name
      hours:                        # required: day or day range -> local "HH:MM-HH:MM" intervals
        mon-fri: ["09:00-17:00"]
        sat: ["10:00-14:00"]
      holidays: ["2026-12-25"]      # optional: local dates closed all day
    teams:                          # optional
      billing:
        timezone: America/New_York  # optional: the default's time zone when left out
        hours: {mon-fri: ["08:00-12:00", "13:00-18:00"]}

Choices where the contract is silent:
- `default` is required: without it most teams would silently have no business time. A team's
  entry replaces the default entirely (hours and holidays), so it must give its own `hours`
  (`hours: {}` for a team that is never open); only `timezone` is inherited.
- Days are `mon` .. `sun` (any case). A range runs forward through the week and may wrap:
  `mon-fri` is five days, `fri-mon` is fri, sat, sun, mon; `mon-mon` is refused as ambiguous.
  A day not listed is closed. A day may appear under several keys (`mon-fri` and `fri`); its
  intervals are then joined and must not overlap (touching, like 09:00-12:00 and 12:00-13:00,
  is fine).
- An interval is `HH:MM-HH:MM` (`H:MM` is accepted too), start before end, and may end at `24:00`.
  A night shift is two intervals on two days (`22:00-24:00` on mon, `00:00-06:00` on tue);
  each part belongs to its own date, so a holiday closes only the part on that date.
- Holidays are local dates (quoted or not) closed all day.
- Unknown keys, duplicate keys, and anything malformed raise `ScheduleError` (a `ValueError`)
  with one line naming the file and the place in it, e.g.
  `hours.yaml: teams.billing.hours.mon-fri[1]: '13:00-12:00' ends before it starts; ...`.

What a second counts as: an instant is business time when its local wall-clock time (the
schedule's time zone, daylight saving included) lies in an opening interval of its local date,
and that date is not a holiday. Business time is the real elapsed seconds of such instants.
So across daylight saving changes, an opening interval counts the real time it covers:
01:00-03:00 on a fall-back night (02:00-03:00 happens twice) is 3 hours, 01:00-04:00 on a
spring-forward night is 2 hours, and 02:00-03:00 that does not exist that night is 0.

The seconds themselves are counted by the core (`core/src/business.rs`): an interval is cut
where the zone's UTC offset changes, and each piece is summed in closed form, so a ticket of
any length costs O(offset changes + holidays in it). Here: reading and checking the file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import yaml

from ._core import OpeningHours

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SECONDS = 86_400
WEEK_SECONDS = 7 * DAY_SECONDS

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

_INTERVAL = re.compile(r"\s*(\d{1,2}):(\d\d)\s*-\s*(\d{1,2}):(\d\d)\s*")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_ENTRY_KEYS = ("timezone", "hours", "holidays")
_TOP_KEYS = ("default", "teams")
_NIGHT_SHIFT_HINT = "a night shift is two intervals, e.g. 22:00-24:00 and 00:00-06:00 next day"


class ScheduleError(ValueError):
    """A business-hours schedule is unusable; the message says where and why, in one line."""


class Schedule:
    """Opening hours in one time zone: a weekly pattern of local intervals, minus holidays.

    `hours` has seven entries, Monday first; each is a sequence of (start, end) seconds after
    local midnight, 0 <= start < end <= 86400, not overlapping. Most code gets a Schedule from
    `parse_schedules` or `load_schedules` rather than building one.
    """

    __slots__ = ("_ends", "_holiday_days", "_opening_hours", "_starts", "_zone")

    def __init__(
        self,
        timezone: str,
        hours: Sequence[Sequence[tuple[int, int]]],
        holidays: Iterable[date] = (),
    ) -> None:
        self._zone = _zone(timezone)
        if len(hours) != len(DAYS):
            raise ScheduleError(f"hours has {len(hours)} days; expected 7, Monday first")
        starts: list[int] = []
        ends: list[int] = []
        for day, intervals in enumerate(hours):
            previous_end = 0
            for start, end in sorted(intervals):
                if not 0 <= start < end <= DAY_SECONDS or start < previous_end:
                    raise ScheduleError(
                        f"{DAYS[day]}: intervals must lie within the day, start before they "
                        f"end and not overlap; got {sorted(intervals)}"
                    )
                previous_end = end
                base = day * DAY_SECONDS
                if start > 0 and ends and ends[-1] == base + start:
                    ends[-1] = base + end  # touching on one day: one interval
                else:
                    starts.append(base + start)
                    ends.append(base + end)
        self._starts = tuple(starts)
        self._ends = tuple(ends)
        self._holiday_days = tuple(sorted({day.toordinal() - _EPOCH_ORDINAL for day in holidays}))
        try:
            self._opening_hours = OpeningHours(
                self._zone.key, list(zip(starts, ends, strict=True)), list(self._holiday_days)
            )
        except ValueError as error:  # a zone Python's tzdata has and the core's has not
            raise ScheduleError(str(error)) from None

    @property
    def opening_hours(self) -> OpeningHours:
        """The schedule as the core counts business seconds by it."""
        return self._opening_hours

    @property
    def timezone(self) -> str:
        return self._zone.key

    @property
    def hours(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Per day, Monday first: sorted (start, end) seconds after local midnight."""
        days: list[list[tuple[int, int]]] = [[] for _ in DAYS]
        for start, end in zip(self._starts, self._ends, strict=True):
            day = start // DAY_SECONDS
            days[day].append((start - day * DAY_SECONDS, end - day * DAY_SECONDS))
        return tuple(tuple(intervals) for intervals in days)

    @property
    def holidays(self) -> frozenset[date]:
        return frozenset(date.fromordinal(day + _EPOCH_ORDINAL) for day in self._holiday_days)

    def __repr__(self) -> str:
        return f"Schedule({self.timezone!r}, {self.hours!r}, {sorted(self.holidays)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.timezone, self.hours, self.holidays) == (
            other.timezone,
            other.hours,
            other.holidays,
        )

    def __hash__(self) -> int:
        return hash((self.timezone, self.hours, self.holidays))

    def business_seconds(self, start: float, end: float) -> float:
        """Seconds of [start, end) (POSIX timestamps) inside opening hours; 0 if end <= start."""
        return self._opening_hours.business_seconds(start, end)


@dataclass(frozen=True)
class Schedules:
    """The default schedule and the teams that have their own."""

    default: Schedule
    teams: Mapping[str, Schedule]

    def for_team(self, team: str) -> Schedule:
        """The team's own schedule, or the default for a team without one."""
        return self.teams.get(team, self.default)


def load_schedules(path: str | Path) -> Schedules:
    """Read and check a schedule file (the `CX_BUSINESS_HOURS` format)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ScheduleError(f"{path}: cannot read the business-hours file: {reason}") from None
    return parse_schedules(text, str(path))


def parse_schedules(text: str, source: str = "<business hours>") -> Schedules:
    """Parse and check schedule YAML; `source` names the file in error messages."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = _one_line(error.problem or error.context or "unreadable")
        raise ScheduleError(f"{source}: {where}not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise ScheduleError(f"{source}: not valid YAML: {_one_line(str(error))}") from None
    return _Parser(source).schedules(data)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ScheduleError:
        return ScheduleError(f"{self.source}: {where}: {problem}" if where else problem)

    def schedules(self, data: Any) -> Schedules:
        if data is None:
            raise ScheduleError(f"{self.source}: the file is empty; expected a 'default:' schedule")
        if not isinstance(data, dict):
            raise ScheduleError(
                f"{self.source}: expected a mapping with 'default:' and optional 'teams:', "
                f"got {_kind(data)}"
            )
        self.known_keys("", data, _TOP_KEYS)
        if "default" not in data:
            raise ScheduleError(
                f"{self.source}: missing 'default:', the schedule of every team without its own"
            )
        default = self.entry("default", data["default"], None)
        teams_data = data.get("teams")
        if teams_data is None:
            teams_data = {}
        if not isinstance(teams_data, dict):
            raise self.fail(
                "teams", f"expected a mapping of team name -> entry, got {_kind(teams_data)}"
            )
        teams: dict[str, Schedule] = {}
        for name, entry in teams_data.items():
            if not isinstance(name, str) or not name:
                raise self.fail(
                    "teams", f"team name {_show(name)} is not a non-empty string; quote it"
                )
            teams[name] = self.entry(f"teams.{name}", entry, default.timezone)
        return Schedules(default, teams)

    def known_keys(self, where: str, data: dict[Any, Any], allowed: Sequence[str]) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                place = f"{where}.{key}" if where else str(key)
                raise self.fail(place, f"unknown key; expected one of {', '.join(allowed)}{hint}")

    def entry(self, where: str, data: Any, inherited_timezone: str | None) -> Schedule:
        if not isinstance(data, dict):
            raise self.fail(
                where, f"expected a mapping with hours (and timezone, holidays), got {_kind(data)}"
            )
        self.known_keys(where, data, _ENTRY_KEYS)
        if "timezone" in data:
            timezone = self.timezone(f"{where}.timezone", data["timezone"])
        elif inherited_timezone is not None:
            timezone = inherited_timezone
        else:
            raise self.fail(where, "missing 'timezone' (an IANA name like Europe/Berlin)")
        if "hours" not in data:
            raise self.fail(
                where,
                "missing 'hours' (like {mon-fri: ['09:00-17:00']}; {} if never open)"
                + ("; a team's entry replaces the default entirely" if inherited_timezone else ""),
            )
        hours = self.hours(f"{where}.hours", data["hours"])
        holidays = self.holidays(f"{where}.holidays", data.get("holidays"))
        return Schedule(timezone, hours, holidays)

    def timezone(self, where: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(
                where, f"{_show(value)} is not an IANA time zone name like Europe/Berlin"
            )
        try:
            return _zone(value).key
        except ScheduleError as error:
            raise self.fail(where, str(error)) from None

    def hours(self, where: str, data: Any) -> list[list[tuple[int, int]]]:
        if not isinstance(data, dict):
            raise self.fail(
                where, f"expected a mapping like {{mon-fri: ['09:00-17:00']}}, got {_kind(data)}"
            )
        # per day: (start, end, text, location, order in the file)
        found: list[list[tuple[int, int, str, str, int]]] = [[] for _ in DAYS]
        order = 0
        for key, value in data.items():
            days = self.days(f"{where}.{key}", key)
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list):
                raise self.fail(
                    f"{where}.{key}",
                    f'expected a list of "HH:MM-HH:MM" intervals, got {_kind(value)}',
                )
            for index, item in enumerate(items):
                place = f"{where}.{key}" if isinstance(value, str) else f"{where}.{key}[{index}]"
                start, end = self.interval(place, item)
                order += 1
                for day in days:
                    found[day].append((start, end, str(item), place, order))
        hours: list[list[tuple[int, int]]] = []
        for day, intervals in enumerate(found):
            intervals.sort()
            for before, after in pairwise(intervals):
                if after[0] < before[1]:
                    first, second = sorted((before, after), key=lambda interval: interval[4])
                    raise self.fail(
                        second[3],
                        f"{second[2]!r} overlaps {first[2]!r} ({first[3]}) on {DAYS[day]}",
                    )
            hours.append([(start, end) for start, end, *_ in intervals])
        return hours

    def days(self, where: str, key: Any) -> list[int]:
        expected = "expected mon, tue, wed, thu, fri, sat, sun or a range like mon-fri"
        if not isinstance(key, str):
            raise self.fail(where, f"{_show(key)} is not a day; {expected}")
        first, dash, last = key.strip().lower().partition("-")
        for name in (first, last) if dash else (first,):
            if name.strip() not in DAYS:
                raise self.fail(where, f"{name.strip()!r} is not a day; {expected}")
        start = DAYS.index(first.strip())
        if not dash:
            return [start]
        stop = DAYS.index(last.strip())
        if stop == start:
            raise self.fail(where, f"a range needs two different days; write {first.strip()!r}")
        return [(start + step) % 7 for step in range((stop - start) % 7 + 1)]

    def interval(self, where: str, item: Any) -> tuple[int, int]:
        example = 'an interval like "09:00-17:00"'
        if not isinstance(item, str):
            raise self.fail(where, f"{_show(item)} is not {example} (quote it)")
        match = _INTERVAL.fullmatch(item)
        if not match:
            raise self.fail(where, f"{_show(item)} is not {example}")
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
        for hour, minute in ((start_h, start_m), (end_h, end_m)):
            if hour > 24 or minute > 59 or (hour == 24 and minute > 0):
                raise self.fail(
                    where, f"{item!r}: {hour:02}:{minute:02} is not a time of day (00:00 to 24:00)"
                )
        if start_h == 24:
            raise self.fail(where, f"{item!r} starts at 24:00; only an interval's end may be 24:00")
        start = start_h * 3600 + start_m * 60
        end = end_h * 3600 + end_m * 60
        if end < start:
            raise self.fail(where, f"{item!r} ends before it starts; {_NIGHT_SHIFT_HINT}")
        if end == start:
            raise self.fail(where, f"{item!r} is empty: it ends when it starts")
        return start, end

    def holidays(self, where: str, data: Any) -> list[date]:
        if data is None:
            return []
        if not isinstance(data, list):
            raise self.fail(
                where, f'expected a list of dates like ["2026-12-25"], got {_kind(data)}'
            )
        days: list[date] = []
        for index, item in enumerate(data):
            if isinstance(item, date) and not isinstance(item, datetime):
                days.append(item)
                continue
            try:
                if not isinstance(item, str) or not _DATE.fullmatch(item.strip()):
                    raise ValueError
                days.append(date.fromisoformat(item.strip()))
            except ValueError:
                raise self.fail(
                    f"{where}[{index}]", f"{_show(item)} is not a date like 2026-12-25"
                ) from None
        return days


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"{_show(key)} is given twice in the same mapping",
                    problem_mark=key_node.start_mark,
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        close = [key for key in available_timezones() if key.lower() == name.strip().lower()]
        hint = f"; did you mean {close[0]}?" if close else " like Europe/Berlin"
        raise ScheduleError(f"{_show(name)} is not a known IANA time zone{hint}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _show(value)


def _show(value: Any) -> str:
    if isinstance(value, date):  # YAML reads unquoted dates and times itself
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
