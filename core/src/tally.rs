//! What a set of observations adds up to: counts and sums by name, and the duration sketches
//! whose quantiles are exported. Tallies are added and subtracted exactly (a retraction), so a
//! sketch keeps integer counts per bucket rather than a compressed summary.

use std::cmp::Ordering;

/// The counts and sums a tally keeps, by position: the names of the partials' JSON.
pub const COUNT_NAMES: [&str; 25] = [
    "tickets_opened",
    "first_response_count",
    "first_response_seconds_sum",
    "first_response_sla_breaches",
    "first_response_business_seconds_sum",
    "resolution_count",
    "resolution_seconds_sum",
    "resolution_sla_breaches",
    "resolution_business_seconds_sum",
    "full_resolution_count",
    "full_resolution_seconds_sum",
    "tickets_resolved",
    "one_touch_tickets",
    "reopened_tickets",
    "first_contact_resolutions",
    "ticket_reopens",
    "nps_promoters",
    "nps_passives",
    "nps_detractors",
    "csat_responses",
    "csat_score_sum",
    "csat_satisfied",
    "ces_responses",
    "ces_score_sum",
    "ces_low_effort",
];

/// The duration sketches a tally keeps, by position.
pub const SKETCH_NAMES: [&str; 5] = [
    "first_response_seconds",
    "first_response_business_seconds",
    "resolution_seconds",
    "resolution_business_seconds",
    "full_resolution_seconds",
];

pub fn count_index(name: &str) -> Option<usize> {
    COUNT_NAMES.iter().position(|known| *known == name)
}

pub fn sketch_index(name: &str) -> Option<usize> {
    SKETCH_NAMES.iter().position(|known| *known == name)
}

/// The contract allows 2% relative error on quantiles; the sketch guarantees 1%.
pub const SKETCH_RELATIVE_ACCURACY: f64 = 0.01;

/// The key of the bucket of values too small to tell from 0. It sorts first, which is where
/// a quantile's rank walk meets the zeros.
pub const ZERO_KEY: i32 = i32::MIN;

/// DDSketch's logarithmic mapping (the `ddsketch` package's LogarithmicMapping, computed the
/// same way so that keys and values match it): bucket `k` holds the values in
/// (gamma^(k-1), gamma^k], and reads as the value within the accuracy of all of them.
struct Mapping {
    gamma: f64,
    multiplier: f64,
    min_possible: f64,
}

const fn mapping_gamma_mantissa() -> f64 {
    2.0 * SKETCH_RELATIVE_ACCURACY / (1.0 - SKETCH_RELATIVE_ACCURACY)
}

fn mapping() -> Mapping {
    let gamma_mantissa = mapping_gamma_mantissa();
    let gamma = 1.0 + gamma_mantissa;
    Mapping {
        gamma,
        multiplier: (1.0 / gamma_mantissa.ln_1p()) * std::f64::consts::LN_2,
        min_possible: f64::MIN_POSITIVE * gamma,
    }
}

/// The sketch bucket of a non-negative duration (ZERO_KEY: the zero bucket).
pub fn sketch_key(value: f64) -> i32 {
    let mapping = mapping();
    if value <= mapping.min_possible {
        return ZERO_KEY;
    }
    // log base 2 as Python's math.log(value, 2) computes it
    (value.ln() / std::f64::consts::LN_2 * mapping.multiplier).ceil() as i32
}

/// The value a sketch bucket reads as.
pub fn sketch_value(key: i32) -> f64 {
    if key == ZERO_KEY {
        return 0.0;
    }
    let mapping = mapping();
    2f64.powf(f64::from(key) / mapping.multiplier) * (2.0 / (1.0 + mapping.gamma))
}

/// One bucket of one sketch and how many values it holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bin {
    pub sketch: u8,
    pub key: i32,
    pub count: i64,
}

impl Bin {
    fn place(&self) -> (u8, i32) {
        (self.sketch, self.key)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// How many observations it holds: a bucket at 0 can go.
    pub observations: i64,
    pub counts: [f64; COUNT_NAMES.len()],
    /// Every sketch's buckets, ordered by (sketch, key); none at 0.
    pub bins: Vec<Bin>,
}

impl Tally {
    pub fn add_count(&mut self, index: usize, amount: f64) {
        self.counts[index] += amount;
    }

    pub fn add_bin(&mut self, sketch: u8, key: i32, count: i64) {
        match self
            .bins
            .binary_search_by(|bin| bin.place().cmp(&(sketch, key)))
        {
            Ok(found) => {
                self.bins[found].count += count;
                if self.bins[found].count == 0 {
                    self.bins.remove(found);
                }
            }
            Err(at) if count != 0 => self.bins.insert(at, Bin { sketch, key, count }),
            Err(_) => {}
        }
    }

    /// Set its buckets from any list of them: ordered, those of one place added up, none at 0.
    pub fn set_bins(&mut self, mut bins: Vec<Bin>) {
        bins.sort_unstable_by_key(Bin::place);
        bins.dedup_by(|later, kept| {
            let same = later.place() == kept.place();
            if same {
                kept.count += later.count;
            }
            same
        });
        bins.retain(|bin| bin.count != 0);
        self.bins = bins;
    }

    /// Add `other`'s observations and counts, and append its bins to `bins`, to be set once
    /// all are in (`set_bins`): a sum of many tallies sorts their bins once, where merging
    /// them one by one would copy the growing sum's at each. Counts are added as `merge` adds
    /// them, so a sum in the same order comes out the same.
    pub fn add_unsorted(&mut self, other: &Tally, bins: &mut Vec<Bin>) {
        self.observations += other.observations;
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        bins.extend_from_slice(&other.bins);
    }

    /// Add (sign 1) or subtract (sign -1) every observation of `other`.
    pub fn merge(&mut self, other: &Tally, sign: i64) {
        self.observations += sign * other.observations;
        let factor = sign as f64;
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += factor * theirs;
        }
        if self.bins.is_empty() && sign == 1 {
            self.bins.clone_from(&other.bins);
            return;
        }
        if other.bins.len() <= 8 || other.bins.len() * 16 < self.bins.len() {
            // a few values (an observation, a batch's into a long-lived total): in place,
            // no copy of the whole
            for bin in &other.bins {
                self.add_bin(bin.sketch, bin.key, sign * bin.count);
            }
            return;
        }
        // both ordered: one pass over the two
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut i, mut j) = (0, 0);
        while i < self.bins.len() || j < other.bins.len() {
            let order = match (self.bins.get(i), other.bins.get(j)) {
                (Some(a), Some(b)) => a.place().cmp(&b.place()),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            let mut bin = match order {
                Ordering::Greater => Bin {
                    count: 0,
                    ..other.bins[j]
                },
                _ => self.bins[i],
            };
            if order != Ordering::Greater {
                i += 1;
            }
            if order != Ordering::Less {
                bin.count += sign * other.bins[j].count;
                j += 1;
            }
            if bin.count != 0 {
                merged.push(bin);
            }
        }
        self.bins = merged;
    }

    pub fn count(&self, index: usize) -> f64 {
        self.counts[index]
    }

    /// The buckets of one sketch, the zero bucket first.
    pub fn sketch(&self, sketch: u8) -> &[Bin] {
        let start = self.bins.partition_point(|bin| bin.sketch < sketch);
        let end = self.bins.partition_point(|bin| bin.sketch <= sketch);
        &self.bins[start..end]
    }

    /// For each q, the value at rank floor(q * (n - 1)) (0-based) of the sketch; None when it
    /// is empty.
    pub fn quantiles(&self, sketch: u8, qs: &[f64]) -> Vec<Option<f64>> {
        let bins = self.sketch(sketch);
        let total: i64 = bins.iter().map(|bin| bin.count).sum();
        qs.iter()
            .map(|q| {
                if total <= 0 {
                    return None;
                }
                let rank = (q * (total - 1) as f64).floor() as i64;
                let mut below = 0;
                for bin in bins {
                    below += bin.count;
                    if rank < below {
                        return Some(sketch_value(bin.key));
                    }
                }
                bins.last().map(|bin| sketch_value(bin.key))
            })
            .collect()
    }

    /// A compact byte form: what a bucket is kept as once batches moved on (about a tenth of
    /// its size as a tally), and what a checkpoint stores.
    pub fn pack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 4 * self.bins.len());
        put_signed(&mut out, self.observations);
        let nonzero = self.counts.iter().filter(|amount| **amount != 0.0).count();
        out.push(nonzero as u8);
        for (index, amount) in self.counts.iter().enumerate() {
            if *amount == 0.0 {
                continue;
            }
            // most counts are whole numbers: a varint instead of eight bytes
            if amount.fract() == 0.0 && amount.abs() < 9.0e15 {
                out.push(index as u8 | WHOLE);
                put_signed(&mut out, *amount as i64);
            } else {
                out.push(index as u8);
                out.extend_from_slice(&amount.to_le_bytes());
            }
        }
        put_unsigned(&mut out, self.bins.len() as u64);
        let mut previous = (u8::MAX, 0i64);
        for bin in &self.bins {
            // keys as differences within a sketch: one or two bytes each
            let key = i64::from(bin.key);
            if bin.sketch == previous.0 {
                out.push(SAME_SKETCH);
                put_signed(&mut out, key - previous.1);
            } else {
                out.push(bin.sketch);
                put_signed(&mut out, key);
            }
            put_signed(&mut out, bin.count);
            previous = (bin.sketch, key);
        }
        out
    }

    pub fn unpack(packed: &[u8]) -> Result<Tally, Unreadable> {
        let mut reader = Reader { bytes: packed };
        let mut tally = Tally {
            observations: reader.signed()?,
            ..Tally::default()
        };
        for _ in 0..reader.byte()? {
            let tag = reader.byte()?;
            let index = usize::from(tag & !WHOLE);
            let amount = if tag & WHOLE != 0 {
                reader.signed()? as f64
            } else {
                f64::from_le_bytes(reader.take(8)?.try_into().map_err(|_| Unreadable)?)
            };
            *tally.counts.get_mut(index).ok_or(Unreadable)? = amount;
        }
        let bins = reader.unsigned()?;
        let mut previous = (u8::MAX, 0i64);
        for _ in 0..bins {
            let tag = reader.byte()?;
            let (sketch, key) = if tag == SAME_SKETCH {
                let difference = reader.signed()?;
                (
                    previous.0,
                    previous.1.checked_add(difference).ok_or(Unreadable)?,
                )
            } else {
                (tag, reader.signed()?)
            };
            if usize::from(sketch) >= SKETCH_NAMES.len() {
                return Err(Unreadable);
            }
            let count = reader.signed()?;
            tally.bins.push(Bin {
                sketch,
                key: i32::try_from(key).map_err(|_| Unreadable)?,
                count,
            });
            previous = (sketch, key);
        }
        let ordered = tally
            .bins
            .windows(2)
            .all(|pair| pair[0].place() < pair[1].place());
        if !reader.bytes.is_empty() || !ordered {
            return Err(Unreadable);
        }
        Ok(tally)
    }
}

const WHOLE: u8 = 0x80;
const SAME_SKETCH: u8 = 0xff;

/// Packed bytes that are not a tally (a damaged checkpoint).
#[derive(Debug, PartialEq)]
pub struct Unreadable;

fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Unreadable> {
        if self.bytes.len() < n {
            return Err(Unreadable);
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, Unreadable> {
        Ok(self.take(1)?[0])
    }

    fn unsigned(&mut self) -> Result<u64, Unreadable> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Unreadable)
    }

    fn signed(&mut self) -> Result<i64, Unreadable> {
        let zigzag = self.unsigned()?;
        Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(counts: &[(usize, f64)], bins: &[(u8, i32, i64)]) -> Tally {
        let mut tally = Tally::default();
        for (index, amount) in counts {
            tally.add_count(*index, *amount);
            tally.observations += 1;
        }
        for (sketch, key, count) in bins {
            tally.add_bin(*sketch, *key, *count);
        }
        tally
    }

    #[test]
    fn packs_and_unpacks_to_the_same_tally() {
        let original = tally(
            &[(0, 3.0), (2, 1234.567), (20, -2.0), (24, 1e300)],
            &[(0, ZERO_KEY, 2), (0, -40, 1), (0, 700, -3), (4, 12, 5)],
        );
        let packed = original.pack();
        assert_eq!(Tally::unpack(&packed), Ok(original));
        for cut in 0..packed.len() {
            assert!(Tally::unpack(&packed[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn merging_adds_and_subtracts_bins_exactly() {
        let a = tally(&[(0, 1.0)], &[(0, 5, 1), (0, 9, 2), (2, 1, 1)]);
        let b = tally(&[(0, 2.0)], &[(0, 5, 1), (1, 3, 4), (2, 1, 1)]);
        let mut sum = a.clone();
        sum.merge(&b, 1);
        assert_eq!(
            sum.bins,
            tally(&[], &[(0, 5, 2), (0, 9, 2), (1, 3, 4), (2, 1, 2)]).bins
        );
        sum.merge(&b, -1);
        assert_eq!(sum, a);
        let mut none = a.clone();
        none.merge(&a, -1);
        assert!(none.bins.is_empty() && none.observations == 0);
    }

    #[test]
    fn bins_set_in_any_order_are_ordered_and_added_up() {
        let mut set = Tally::default();
        let bin = |sketch, key, count| Bin { sketch, key, count };
        set.set_bins(vec![
            bin(2, 5, 1),
            bin(0, 9, 2),
            bin(2, 5, 3),
            bin(0, 1, 0),
            bin(0, ZERO_KEY, 4),
        ]);
        assert_eq!(
            set.bins,
            vec![bin(0, ZERO_KEY, 4), bin(0, 9, 2), bin(2, 5, 4)]
        );
    }

    #[test]
    fn keys_and_values_are_within_the_accuracy() {
        for value in [1e-9, 0.5, 1.0, 59.0, 3600.0, 86400.0 * 365.0] {
            let read = sketch_value(sketch_key(value));
            assert!(
                (read - value).abs() <= SKETCH_RELATIVE_ACCURACY * value,
                "{value}"
            );
        }
        assert_eq!(sketch_key(0.0), ZERO_KEY);
    }
}
