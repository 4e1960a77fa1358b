//! An account's support experience at an instant (docs/contract.md 7.4): its drivers, health
//! factors, score and band, from the observations its tickets and survey responses sent it
//! (`experience`). The same numbers as stream/experience.py's `snapshot_at`, to the bit: the
//! accounts' evaluation (`accounts`) and Python's must publish identical scores.

use crate::experience::AccountObservation;
use crate::windows::{is_ces_low_effort, is_csat_satisfied, nps_category};

pub const DRIVERS: [&str; 5] = [
    "sla_breached",
    "reopened",
    "csat_unsatisfied",
    "nps_detractor",
    "high_effort",
];
/// In the order Python's snapshot adds them to its factors, which is the order the score sums
/// them in (a float sum depends on it).
pub const FACTORS: [&str; 6] = [
    "csat",
    "nps",
    "ces",
    "first_response_sla",
    "resolution_sla",
    "reopens",
];
pub const BANDS: [&str; 4] = ["red", "yellow", "green", "unknown"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Band {
    Red,
    Yellow,
    Green,
    Unknown,
}

impl Band {
    /// Its position in BANDS.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        BANDS[self.index()]
    }
}

/// The band of a score: red below 50, yellow below 75, else green; unknown without a score.
pub fn band(score: Option<f64>) -> Band {
    match score {
        None => Band::Unknown,
        Some(score) if score < 50.0 => Band::Red,
        Some(score) if score < 75.0 => Band::Yellow,
        Some(_) => Band::Green,
    }
}

/// CX_HEALTH_WEIGHTS, by position in FACTORS; a factor not named keeps weight 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights(pub [f64; FACTORS.len()]);

impl Default for Weights {
    fn default() -> Self {
        Weights([1.0; FACTORS.len()])
    }
}

impl Weights {
    /// From (factor, weight) pairs; names that are not factors weigh nothing anywhere, as in
    /// Python, where only the present factors' weights are looked up.
    pub fn from_named<'a>(named: impl IntoIterator<Item = (&'a str, f64)>) -> Weights {
        let mut weights = Weights::default();
        for (name, weight) in named {
            if let Some(position) = FACTORS.iter().position(|factor| *factor == name) {
                weights.0[position] = weight;
            }
        }
        weights
    }
}

/// An account's experience at an instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// By position in DRIVERS.
    pub drivers: [bool; DRIVERS.len()],
    /// By position in FACTORS: None where the lookback holds nothing for it.
    pub factors: [Option<f64>; FACTORS.len()],
    pub score: Option<f64>,
    pub band: Band,
}

pub const NO_EXPERIENCE: Snapshot = Snapshot {
    drivers: [false; DRIVERS.len()],
    factors: [None; FACTORS.len()],
    score: None,
    band: Band::Unknown,
};

/// The experience counted in (moment - lookback, moment] of `observations`, which are in
/// time order (AccountState::observations), so that the interval is found by bisection.
pub fn snapshot_at(
    observations: &[AccountObservation],
    moment: f64,
    lookback: f64,
    weights: &Weights,
) -> Snapshot {
    let start = moment - lookback;
    let first = observations.partition_point(|observation| observation.at() <= start);
    let end = observations.partition_point(|observation| observation.at() <= moment);
    // breaches summed in 128 bits: a stored flag is any 64-bit integer to serde (only 0 and
    // 1 are written), and Python's sum cannot overflow
    let (mut frt_breaches, mut ttr_breaches) = (0_i128, 0_i128);
    let (mut frt, mut ttr, mut reopens) = (0, 0, 0);
    let (mut resolved, mut reopened) = (0, 0);
    let (mut csat, mut satisfied, mut unsatisfied) = (0, 0, 0);
    let (mut ces, mut low_effort, mut high_effort) = (0, 0, 0);
    let mut latest_nps: Option<(f64, &str, i64)> = None;
    for observation in observations.get(first..end).unwrap_or_default() {
        match observation {
            AccountObservation::Frt(_, breached) => {
                frt += 1;
                frt_breaches += i128::from(*breached);
            }
            AccountObservation::Ttr(_, breached) => {
                ttr += 1;
                ttr_breaches += i128::from(*breached);
            }
            AccountObservation::Reopen(_) => reopens += 1,
            AccountObservation::Resolved(_, reopened_at) => {
                resolved += 1;
                // reopened by the instant judged: nothing after it is seen
                reopened += i64::from(reopened_at.is_some_and(|reopen| reopen <= moment));
            }
            AccountObservation::Csat(_, score) => {
                csat += 1;
                satisfied += i64::from(is_csat_satisfied(*score));
                unsatisfied += i64::from(*score <= 3);
            }
            AccountObservation::Ces(_, score) => {
                ces += 1;
                low_effort += i64::from(is_ces_low_effort(*score));
                high_effort += i64::from(*score <= 4);
            }
            AccountObservation::Nps(at, score, event_id) => {
                // the latest response by (at, event_id); of equal ones, the first seen
                let later = latest_nps.is_none_or(|(latest_at, latest_id, _)| {
                    *at > latest_at || (*at == latest_at && event_id.as_str() > latest_id)
                });
                if later {
                    latest_nps = Some((*at, event_id, *score));
                }
            }
        }
    }
    let nps = latest_nps.map(|(_, _, score)| nps_category(score));
    let drivers = [
        frt_breaches + ttr_breaches > 0,
        reopens > 0,
        unsatisfied > 0,
        nps == Some("detractor"),
        high_effort > 0,
    ];
    // each as Python computes it: 100 * part / whole is (100 * part) / whole, and
    // 100 * (1 - part / whole) rounds at each step
    let share = |part: i64, whole: i64| (whole != 0).then(|| (100 * part) as f64 / whole as f64);
    let met = |missed: i128, whole: i64| {
        (whole != 0).then(|| 100.0 * (1.0 - missed as f64 / whole as f64))
    };
    let factors = [
        share(satisfied, csat),
        nps.map(|category| match category {
            "promoter" => 100.0,
            "passive" => 50.0,
            _ => 0.0,
        }),
        share(low_effort, ces),
        met(frt_breaches, frt),
        met(ttr_breaches, ttr),
        met(i128::from(reopened), resolved),
    ];
    let score = health_score(&factors, weights);
    Snapshot {
        drivers,
        factors,
        score,
        band: band(score),
    }
}

/// The weighted mean of the present factors (weight 0 drops one), rounded to 6 decimal places
/// half to even as Python rounds Decimal(repr(mean)): the decimal digits of the shortest
/// representation that reads back as the mean are rounded, not its binary value. None without
/// a weighted factor. Summed left to right in FACTORS order, as Python 3.11's sum() does.
pub fn health_score(factors: &[Option<f64>; FACTORS.len()], weights: &Weights) -> Option<f64> {
    let mut total = 0.0;
    let mut weighted = 0.0;
    for (factor, weight) in factors.iter().zip(weights.0) {
        if let Some(value) = factor {
            total += weight;
            weighted += weight * value;
        }
    }
    if total == 0.0 {
        return None;
    }
    Some(round_half_even_6(weighted / total))
}

const DECIMALS: usize = 6;

/// `value` rounded to 6 decimal places, half to even, in its shortest decimal representation
/// (Rust's Display: the shortest digits that read back as `value`, as Python's repr, never in
/// exponent form). Non-finite values are returned as they are (Python's Decimal would raise;
/// a mean of factors in [0, 100] is never one).
fn round_half_even_6(value: f64) -> f64 {
    if !value.is_finite() {
        return value;
    }
    let written = value.to_string();
    let (sign, digits) = match written.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", written.as_str()),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if fraction.len() <= DECIMALS {
        return value; // already exact at 6 places
    }
    let (kept, dropped) = fraction.split_at(DECIMALS);
    // the kept digits as one number, the decimal point 6 places from its end
    let mut number: Vec<u8> = whole.bytes().chain(kept.bytes()).collect();
    let dropped = dropped.as_bytes();
    let up = match dropped.first() {
        Some(b'6'..=b'9') => true,
        Some(b'5') => {
            let above_half = dropped.iter().skip(1).any(|digit| *digit != b'0');
            let last_is_odd = number.last().is_some_and(|digit| (digit - b'0') % 2 == 1);
            above_half || last_is_odd
        }
        _ => false,
    };
    if up {
        let mut carry = true;
        for digit in number.iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                carry = false;
                break;
            }
        }
        if carry {
            number.insert(0, b'1');
        }
    }
    let point = number.len() - DECIMALS;
    let (whole, kept) = number.split_at(point);
    let rounded = format!(
        "{sign}{}.{}",
        String::from_utf8_lossy(whole),
        String::from_utf8_lossy(kept)
    );
    // the nearest float to the rounded decimal, as Python's float(Decimal) reads it
    rounded.parse().unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csat(at: f64, score: i64) -> AccountObservation {
        AccountObservation::Csat(at, score)
    }

    fn nps(at: f64, score: i64, event_id: &str) -> AccountObservation {
        AccountObservation::Nps(at, score, event_id.to_owned())
    }

    #[test]
    fn bands_change_at_50_and_75() {
        assert_eq!(band(None), Band::Unknown);
        assert_eq!(band(Some(0.0)), Band::Red);
        assert_eq!(band(Some(49.999999)), Band::Red);
        assert_eq!(band(Some(50.0)), Band::Yellow);
        assert_eq!(band(Some(74.999999)), Band::Yellow);
        assert_eq!(band(Some(75.0)), Band::Green);
        assert_eq!(band(Some(100.0)), Band::Green);
        assert_eq!(Band::Yellow.name(), "yellow");
    }

    #[test]
    fn rounding_is_half_even_on_the_shortest_decimal_digits() {
        // half at the 7th digit of the shortest repr goes to the even 6th digit, whichever
        // side of the half the binary value is: 2.5000005 is 2.50000050000000006988... in
        // binary (rounding that would give 2.500001), 0.1234575 is 0.12345749999999999779...
        assert_eq!(round_half_even_6(2.5000005), 2.5);
        assert_eq!(round_half_even_6(0.1234575), 0.123458);
        assert_eq!(round_half_even_6(0.1234565), 0.123456);
        assert_eq!(round_half_even_6(2.5000015), 2.500002);
        // above half, below half
        assert_eq!(round_half_even_6(0.12345651), 0.123457);
        assert_eq!(round_half_even_6(0.12345649), 0.123456);
        // a carry through every digit
        assert_eq!(round_half_even_6(99.9999996), 100.0);
        // 6 places or fewer: unchanged
        assert_eq!(round_half_even_6(66.666667), 66.666667);
        assert_eq!(round_half_even_6(50.0), 50.0);
        assert_eq!(round_half_even_6(-0.0000025), -0.000002);
    }

    #[test]
    fn the_score_is_the_weighted_mean_of_the_present_factors() {
        // csat 2 of 3 satisfied (66.666...), ces 1 of 1 low effort (100): (2 x 66.67 + 100) / 3
        let observations = [csat(10.0, 5), csat(11.0, 1), csat(12.0, 4), {
            AccountObservation::Ces(13.0, 7)
        }];
        let weights = Weights::from_named([("csat", 2.0), ("not a factor", 9.0)]);
        let snapshot = snapshot_at(&observations, 20.0, 100.0, &weights);
        assert_eq!(snapshot.factors[0], Some(200.0 / 3.0));
        assert_eq!(snapshot.factors[2], Some(100.0));
        // (2 * 66.66666666666667 + 100) / 3 = 77.77777777777779, to 6 places
        assert_eq!(snapshot.score, Some(77.777778));
        assert_eq!(snapshot.band, Band::Green);
        assert_eq!(snapshot.drivers, [false, false, true, false, false]);
        // weight 0 drops csat: ces alone
        let without = Weights::from_named([("csat", 0.0)]);
        assert_eq!(
            snapshot_at(&observations, 20.0, 100.0, &without).score,
            Some(100.0)
        );
        // every present factor weighted 0: no score
        let none = Weights::from_named([("csat", 0.0), ("ces", 0.0)]);
        let snapshot = snapshot_at(&observations, 20.0, 100.0, &none);
        assert_eq!((snapshot.score, snapshot.band), (None, Band::Unknown));
    }

    #[test]
    fn the_lookback_excludes_its_start_and_includes_the_moment() {
        let observations = [csat(10.0, 1), csat(20.0, 5), csat(30.0, 5), csat(31.0, 1)];
        let weights = Weights::default();
        // (10, 30]: 20 and 30, both satisfied
        let snapshot = snapshot_at(&observations, 30.0, 20.0, &weights);
        assert_eq!(snapshot.factors[0], Some(100.0));
        assert!(!snapshot.drivers[2]);
        // (9, 29]: 10 and 20
        let snapshot = snapshot_at(&observations, 29.0, 20.0, &weights);
        assert_eq!(snapshot.factors[0], Some(50.0));
        // nothing in (31, 40]... but 31 itself is the start: excluded
        assert_eq!(
            snapshot_at(&observations, 40.0, 9.0, &weights),
            NO_EXPERIENCE
        );
    }

    #[test]
    fn the_latest_nps_response_by_time_then_event_id_counts() {
        let weights = Weights::default();
        // the same instant: event id "b" is later than "a"
        let observations = [nps(5.0, 10, "b"), nps(5.0, 0, "a"), nps(1.0, 8, "z")];
        let snapshot = snapshot_at(&observations, 5.0, 10.0, &weights);
        assert_eq!(snapshot.factors[1], Some(100.0));
        assert!(!snapshot.drivers[3]);
        // a later instant wins over a greater event id
        let observations = [nps(5.0, 10, "b"), nps(6.0, 3, "a")];
        let snapshot = snapshot_at(&observations, 6.0, 10.0, &weights);
        assert_eq!(
            (snapshot.factors[1], snapshot.drivers[3]),
            (Some(0.0), true)
        );
        assert_eq!((snapshot.score, snapshot.band), (Some(0.0), Band::Red));
        // a passive: 50, yellow
        let snapshot = snapshot_at(&[nps(1.0, 7, "a")], 6.0, 10.0, &weights);
        assert_eq!((snapshot.score, snapshot.band), (Some(50.0), Band::Yellow));
    }

    #[test]
    fn damaged_breach_flags_sum_without_overflow() {
        let observations = [
            AccountObservation::Frt(1.0, i64::MAX),
            AccountObservation::Frt(2.0, i64::MAX),
        ];
        let snapshot = snapshot_at(&observations, 8.0, 100.0, &Weights::default());
        assert!(snapshot.drivers[0]);
        // Python: 100 * (1 - (2 * (2**63 - 1)) / 2)
        assert_eq!(snapshot.factors[3], Some(-9.223372036854776e20));
    }

    #[test]
    fn slas_reopens_and_effort_as_shares_met() {
        let observations = [
            AccountObservation::Frt(1.0, 1),
            AccountObservation::Frt(2.0, 0),
            AccountObservation::Frt(3.0, 0),
            AccountObservation::Ttr(4.0, 0),
            AccountObservation::Reopen(5.0),
            // reopened at 9, after the moment judged (8): not reopened yet
            AccountObservation::Resolved(6.0, Some(9.0)),
            AccountObservation::Resolved(6.5, Some(7.0)),
            AccountObservation::Ces(7.0, 4),
        ];
        let snapshot = snapshot_at(&observations, 8.0, 100.0, &Weights::default());
        assert_eq!(snapshot.drivers, [true, true, false, false, true]);
        // 100 * (1 - 1/3) = 66.66666666666667 (1/3 rounded, then 1 - it, then x 100)
        assert_eq!(snapshot.factors[3], Some(66.66666666666667));
        assert_eq!(snapshot.factors[4], Some(100.0));
        assert_eq!(snapshot.factors[5], Some(50.0));
        assert_eq!(snapshot.factors[2], Some(0.0));
        assert_eq!(snapshot.factors[0], None);
        // (0 + 66.66666666666667 + 100 + 50) / 4 = 54.16666666666667 -> 54.166667
        assert_eq!(snapshot.score, Some(54.166667));
    }
}
