//! Business time: the seconds of an interval that fall inside a team's opening hours (the
//! schedule file is read and checked by stream/business_hours.py, which says what a second
//! counts as).
//!
//! An interval is cut where the zone's UTC offset changes (jiff's transitions of the IANA
//! zone); within a piece the local clock is a constant shift of UTC, and the weekly pattern is
//! summed in closed form (whole weeks times the week's opening time plus a lookup within the
//! week), then the holidays inside the piece are subtracted. So a ticket of any length costs
//! O(offset changes + holidays in it).

use jiff::Timestamp;
use jiff::tz::TimeZone;

const DAY_SECONDS: f64 = 86_400.0;
const WEEK_SECONDS: f64 = 7.0 * DAY_SECONDS;
/// 1970-01-01 was a Thursday: wall time + this many seconds counts from Monday 1969-12-29.
const MONDAY_SHIFT: f64 = 3.0 * DAY_SECONDS;

/// Opening hours in one time zone: a weekly pattern of local intervals, minus holidays.
#[derive(Clone, Debug)]
pub struct OpeningHours {
    zone: TimeZone,
    /// Opening intervals in seconds since Monday 00:00 local, ordered, not touching.
    starts: Vec<f64>,
    ends: Vec<f64>,
    /// Open seconds of the week before each interval (and, last, of the whole week).
    cumulative: Vec<f64>,
    /// Holidays as local days since 1970-01-01, ordered.
    holidays: Vec<i64>,
}

#[derive(Debug, PartialEq)]
pub struct UnknownZone(pub String);

impl OpeningHours {
    /// `intervals`: (start, end) seconds since Monday 00:00 local, ordered and not overlapping
    /// (stream/business_hours.py checks them); `holidays`: local days since 1970-01-01.
    pub fn new(
        zone_name: &str,
        intervals: &[(i64, i64)],
        holidays: &[i64],
    ) -> Result<OpeningHours, UnknownZone> {
        let zone = TimeZone::get(zone_name).map_err(|_| UnknownZone(zone_name.to_owned()))?;
        let mut cumulative = vec![0.0];
        for (start, end) in intervals {
            let before = cumulative.last().copied().unwrap_or(0.0);
            cumulative.push(before + (end - start) as f64);
        }
        let mut holidays = holidays.to_vec();
        holidays.sort_unstable();
        holidays.dedup();
        Ok(OpeningHours {
            zone,
            starts: intervals.iter().map(|(start, _)| *start as f64).collect(),
            ends: intervals.iter().map(|(_, end)| *end as f64).collect(),
            cumulative,
            holidays,
        })
    }

    fn week_total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// Seconds of [start, end) (POSIX timestamps) inside opening hours; 0 if end <= start.
    /// None for a time outside what a time zone can say (not finite, or past year 9999).
    pub fn business_seconds(&self, start: f64, end: f64) -> Option<f64> {
        if !(start.is_finite() && end.is_finite()) {
            return None;
        }
        if end <= start || self.week_total() == 0.0 {
            return Some(0.0);
        }
        let first = Timestamp::from_second(start.floor() as i64).ok()?;
        let mut offset = f64::from(self.zone.to_offset(first).seconds());
        let mut total = 0.0;
        let mut piece_start = start;
        for transition in self.zone.following(first) {
            let moment = transition.timestamp().as_second() as f64;
            if moment >= end {
                break;
            }
            let new_offset = f64::from(transition.offset().seconds());
            if moment <= start || new_offset == offset {
                continue; // not inside (start, end), or no change of the offset
            }
            total += self.wall_open(piece_start + offset, moment + offset);
            piece_start = moment;
            offset = new_offset;
        }
        Some(total + self.wall_open(piece_start + offset, end + offset))
    }

    /// Open seconds of wall-clock times [low, high), in seconds since 1970-01-01 00:00 local.
    fn wall_open(&self, low: f64, high: f64) -> f64 {
        let mut total = self.weekly(high) - self.weekly(low);
        let first_day = (low / DAY_SECONDS).floor() as i64;
        let last_day = (high / DAY_SECONDS).ceil() as i64;
        let first = self.holidays.partition_point(|day| *day < first_day);
        let last = self.holidays.partition_point(|day| *day < last_day);
        for day in &self.holidays[first..last] {
            let day_start = *day as f64 * DAY_SECONDS;
            total -=
                self.weekly(high.min(day_start + DAY_SECONDS)) - self.weekly(low.max(day_start));
        }
        total
    }

    /// Open seconds of the weekly pattern from Monday 1969-12-29 00:00 up to `wall`.
    fn weekly(&self, wall: f64) -> f64 {
        // divided as Python's divmod divides floats, whose results the tests were written on
        let shifted = wall + MONDAY_SHIFT;
        let into_week = shifted.rem_euclid(WEEK_SECONDS);
        let weeks = ((shifted - into_week) / WEEK_SECONDS).round();
        let index = self.starts.partition_point(|start| *start <= into_week);
        let within = match index.checked_sub(1) {
            None => 0.0,
            Some(index) => {
                self.cumulative[index] + into_week.min(self.ends[index]) - self.starts[index]
            }
        };
        weeks * self.week_total() + within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const DAY: i64 = 86_400;

    fn nine_to_five(zone: &str, holidays: &[i64]) -> OpeningHours {
        let weekdays: Vec<(i64, i64)> = (0..5)
            .map(|day| (day * DAY + 9 * HOUR, day * DAY + 17 * HOUR))
            .collect();
        OpeningHours::new(zone, &weekdays, holidays).expect("a known zone")
    }

    fn at(text: &str) -> f64 {
        text.parse::<Timestamp>().expect("a timestamp").as_second() as f64
    }

    #[test]
    fn a_week_of_nine_to_five_is_forty_hours_in_any_zone() {
        for zone in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"] {
            let hours = nine_to_five(zone, &[]);
            let start = at("2026-01-05T00:00:00Z");
            let seconds = hours.business_seconds(start, start + 7.0 * 86_400.0);
            assert_eq!(seconds, Some(40.0 * 3600.0), "{zone}");
        }
    }

    #[test]
    fn a_holiday_closes_its_local_day_and_daylight_saving_counts_real_seconds() {
        // Monday 2026-01-05 is day 20,458 since 1970-01-01
        let hours = nine_to_five("UTC", &[20_458]);
        let monday = at("2026-01-05T00:00:00Z");
        assert_eq!(hours.business_seconds(monday, monday + 86_400.0), Some(0.0));
        // Berlin opens 01:00-04:00 on the spring-forward Sunday: two real hours
        let night = OpeningHours::new(
            "Europe/Berlin",
            &[(6 * DAY + HOUR, 6 * DAY + 4 * HOUR)],
            &[],
        )
        .expect("a known zone");
        let sunday = at("2026-03-28T23:00:00Z"); // 2026-03-29 00:00 local
        assert_eq!(
            night.business_seconds(sunday, sunday + 86_400.0),
            Some(2.0 * 3600.0)
        );
        assert!(OpeningHours::new("Mars/Olympus", &[], &[]).is_err());
    }
}
