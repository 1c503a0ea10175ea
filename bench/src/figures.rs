//! The figures a run collects, their targets, the table and the JSON lines.

use serde_json::{json, Value};

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// A target from the issue.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// The figure is at least this.
    AtLeast(f64),
    /// The figure is below this.
    Below(f64),
    /// The figure beats the peer's by this factor (more for `Higher`, less for `Lower`).
    TimesPeer(f64),
    /// The figure is at most this fraction of the peer's.
    FractionOfPeer(f64),
    /// The figure equals this exactly.
    Equals(f64),
}

impl Check {
    fn describe(self, unit: &str) -> String {
        match self {
            Check::AtLeast(v) => format!(">= {} {unit}", show(v)),
            Check::Below(v) => format!("< {} {unit}", show(v)),
            Check::TimesPeer(k) => format!("{k}x peer"),
            Check::FractionOfPeer(f) => format!("<= {f:.2} of peer"),
            Check::Equals(v) => format!("= {}", show(v)),
        }
    }

    /// Met, not met, or not known (no peer figure).
    fn met(self, better: Better, ours: f64, peer: Option<f64>) -> Option<bool> {
        match self {
            Check::AtLeast(v) => Some(ours >= v),
            Check::Below(v) => Some(ours < v),
            Check::Equals(v) => Some((ours - v).abs() < 1e-9),
            Check::TimesPeer(k) => peer.map(|p| match better {
                Better::Higher => ours >= k * p,
                Better::Lower => ours * k <= p,
            }),
            Check::FractionOfPeer(f) => peer.map(|p| ours <= f * p),
        }
    }
}

/// One figure: our values per run, the peer's per run, the targets.
#[derive(Clone, Debug)]
pub struct Figure {
    pub key: String,
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    pub ours: Vec<f64>,
    pub peer: Vec<f64>,
    pub checks: Vec<Check>,
    /// Anything else worth keeping in the JSON line.
    pub detail: Value,
}

impl Figure {
    pub fn new(
        key: impl Into<String>,
        label: impl Into<String>,
        unit: &'static str,
        better: Better,
    ) -> Figure {
        Figure {
            key: key.into(),
            label: label.into(),
            unit,
            better,
            ours: Vec::new(),
            peer: Vec::new(),
            checks: Vec::new(),
            detail: json!({}),
        }
    }

    pub fn check(mut self, check: Check) -> Figure {
        self.checks.push(check);
        self
    }

    pub fn ours_median(&self) -> Option<f64> {
        median(&self.ours)
    }

    pub fn peer_median(&self) -> Option<f64> {
        median(&self.peer)
    }

    /// How many times better than the peer (>1 is better), from the medians.
    pub fn advantage(&self) -> Option<f64> {
        let (ours, peer) = (self.ours_median()?, self.peer_median()?);
        if ours == 0.0 || peer == 0.0 {
            return None;
        }
        Some(match self.better {
            Better::Higher => ours / peer,
            Better::Lower => peer / ours,
        })
    }

    /// Every target met? `None` when a target cannot be judged (no peer figure) or there are none.
    pub fn met(&self) -> Option<bool> {
        let ours = self.ours_median()?;
        if self.checks.is_empty() {
            return None;
        }
        let mut all = true;
        for check in &self.checks {
            all &= check.met(self.better, ours, self.peer_median())?;
        }
        Some(all)
    }

    pub fn target(&self) -> String {
        self.checks
            .iter()
            .map(|check| check.describe(self.unit))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn json(&self) -> Value {
        json!({
            "figure": self.key,
            "label": self.label,
            "unit": self.unit,
            "ours": self.ours_median(),
            "peer": self.peer_median(),
            "ours_over_peer": match (self.ours_median(), self.peer_median()) {
                (Some(o), Some(p)) if p != 0.0 => Some(o / p),
                _ => None,
            },
            "times_better": self.advantage(),
            "target": self.target(),
            "met": self.met(),
            "runs": self.ours.len(),
            "ours_runs": self.ours,
            "peer_runs": self.peer,
            "detail": self.detail,
        })
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// The value at quantile `q` (0..=1) of `values`, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// A number for people: thousands separated, sensible precision.
pub fn show(v: f64) -> String {
    if v.abs() >= 100.0 {
        let whole = v.round() as i64;
        let digits = whole.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table, as plain text.
pub fn table(figures: &[Figure]) -> String {
    let opt = |v: Option<f64>| v.map(show).unwrap_or_else(|| "-".to_string());
    let rows: Vec<[String; 7]> = figures
        .iter()
        .map(|f| {
            [
                f.label.clone(),
                format!("{} {}", opt(f.ours_median()), f.unit),
                opt(f.peer_median()),
                f.advantage()
                    .map(|a| format!("{a:.1}x"))
                    .unwrap_or_else(|| "-".into()),
                f.target(),
                match f.met() {
                    Some(true) => "met".to_string(),
                    Some(false) => "MISSED".to_string(),
                    None => "-".to_string(),
                },
                f.ours.len().to_string(),
            ]
        })
        .collect();
    let header = [
        "figure".to_string(),
        "ours (median)".to_string(),
        "peer".to_string(),
        "better by".to_string(),
        "target".to_string(),
        "".to_string(),
        "runs".to_string(),
    ];
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 7]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i == 0 || i == 4 || i == 5 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
            out.push_str("  ");
        }
        out.trim_end().to_string()
    };
    let mut out = line(&header);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len()));
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_targets_and_the_table() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.99), Some(4.0));
        let mut push = Figure::new("push", "first push", "households/s", Better::Higher)
            .check(Check::TimesPeer(10.0));
        push.ours = vec![40_000.0, 39_000.0, 41_000.0];
        assert_eq!(push.met(), None);
        push.peer = vec![3_700.0];
        assert_eq!(push.met(), Some(true));
        let mut pull = Figure::new("pull", "first pull", "s", Better::Lower)
            .check(Check::Below(0.5))
            .check(Check::TimesPeer(10.0));
        pull.ours = vec![0.3];
        pull.peer = vec![2.0];
        assert_eq!(pull.met(), Some(false));
        assert!(table(&[push, pull]).contains("MISSED"));
        assert_eq!(show(1_234_567.4), "1,234,567");
    }
}
