//! Percentiles and the small formatting helpers of the report.

use serde_json::{Value, json};

/// A distribution summarised: nearest-rank percentiles of the samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dist {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Dist {
    /// `None` for no samples. NaNs are ignored.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let idx = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[idx.clamp(1, v.len()) - 1]
        };
        Some(Self {
            n: v.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }

    pub fn json(&self) -> Value {
        json!({"n": self.n, "p50": r3(self.p50), "p90": r3(self.p90), "p99": r3(self.p99),
               "max": r3(self.max), "mean": r3(self.mean)})
    }

    /// One table row: `label  p50  p90  p99  max`.
    pub fn row(&self, label: &str) -> String {
        format!(
            "  {label:<44} {:>9} {:>9} {:>9} {:>9}",
            num(self.p50),
            num(self.p90),
            num(self.p99),
            num(self.max)
        )
    }
}

/// The header matching [`Dist::row`].
pub fn dist_header(title: &str) -> String {
    format!(
        "  {title:<44} {:>9} {:>9} {:>9} {:>9}",
        "p50", "p90", "p99", "max"
    )
}

/// A row for a distribution that may be empty.
pub fn dist_row(label: &str, d: Option<&Dist>) -> String {
    match d {
        Some(d) => d.row(label),
        None => format!("  {label:<44} (no samples)"),
    }
}

pub fn dist_json(d: Option<&Dist>) -> Value {
    d.map_or(Value::Null, Dist::json)
}

/// A number with a precision that suits its size.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Rounded to 3 decimals (for JSON).
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A target check: what was promised, what was measured, whether it held.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    /// `None`: could not be decided (the benchmark failed or was incomplete).
    pub pass: Option<bool>,
}

impl Verdict {
    pub fn new(target: impl Into<String>, measured: impl Into<String>, pass: Option<bool>) -> Self {
        Self {
            target: target.into(),
            measured: measured.into(),
            pass,
        }
    }

    pub fn word(&self) -> &'static str {
        match self.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "N/A",
        }
    }

    pub fn json(&self) -> Value {
        json!({"target": self.target, "measured": self.measured, "verdict": self.word()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = Dist::of(&v).unwrap();
        assert_eq!((d.p50, d.p90, d.p99, d.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(d.mean, 50.5);
        let d = Dist::of(&[3.0]).unwrap();
        assert_eq!((d.p50, d.p99, d.max), (3.0, 3.0, 3.0));
        assert!(Dist::of(&[]).is_none());
        assert!(Dist::of(&[f64::NAN]).is_none());
        let d = Dist::of(&[5.0, 1.0, f64::NAN, 3.0]).unwrap();
        assert_eq!((d.n, d.p50, d.max), (3, 3.0, 5.0));
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(num(1234.5), "1234");
        assert_eq!(num(123.45), "123.5");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(num(1.2345), "1.234");
    }
}
