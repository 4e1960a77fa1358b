//! Metric math: NPS with its margin of error, a proportion's Wilson interval, the difference of
//! two proportions with Newcombe's interval. Pure functions, exported to Python too (the
//! accounts' retention figures use them there).

pub const Z_95: f64 = 1.96;

pub fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole != 0.0).then(|| part / whole)
}

pub fn nps(promoters: i64, passives: i64, detractors: i64) -> Option<f64> {
    let responses = promoters + passives + detractors;
    (responses != 0).then(|| 100.0 * (promoters - detractors) as f64 / responses as f64)
}

/// 95% half-width: 1.96 x 100 x sqrt(((p + d) - (p - d)^2) / n), p and d as shares.
pub fn nps_margin_of_error(promoters: i64, passives: i64, detractors: i64) -> Option<f64> {
    let responses = promoters + passives + detractors;
    if responses == 0 {
        return None;
    }
    let n = responses as f64;
    let (p, d) = (promoters as f64 / n, detractors as f64 / n);
    let variance = ((p + d) - (p - d) * (p - d)).max(0.0); // never below 0 but for rounding
    Some(Z_95 * 100.0 * (variance / n).sqrt())
}

/// Wilson score interval for a binomial proportion (CSAT's satisfied share).
pub fn wilson_interval(successes: f64, trials: f64, z: f64) -> Option<(f64, f64)> {
    if trials == 0.0 {
        return None;
    }
    let share = successes / trials;
    let z2 = z * z;
    let centre = share + z2 / (2.0 * trials);
    let spread = z * (share * (1.0 - share) / trials + z2 / (4.0 * trials * trials)).sqrt();
    let denominator = 1.0 + z2 / trials;
    Some((
        ((centre - spread) / denominator).max(0.0),
        ((centre + spread) / denominator).min(1.0),
    ))
}

/// The difference of two independent proportions p1 - p2 with Newcombe's hybrid score
/// interval (Newcombe 1998, method 10), built from each group's Wilson interval; None while a
/// group is empty.
pub fn newcombe_interval(
    successes1: f64,
    trials1: f64,
    successes2: f64,
    trials2: f64,
    z: f64,
) -> Option<(f64, f64, f64)> {
    let (low1, high1) = wilson_interval(successes1, trials1, z)?;
    let (low2, high2) = wilson_interval(successes2, trials2, z)?;
    let (p1, p2) = (successes1 / trials1, successes2 / trials2);
    let difference = p1 - p2;
    Some((
        difference,
        difference - ((p1 - low1).powi(2) + (high2 - p2).powi(2)).sqrt(),
        difference + ((high1 - p1).powi(2) + (p2 - low2).powi(2)).sqrt(),
    ))
}
