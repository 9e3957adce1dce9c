//! The result table: every figure for each target as the median of its
//! rounds, then its ratios to direct and to nginx.
//!
//! A row is a metric; each target keeps the value of every round so the
//! median is taken at the end. Rows whose direct value is zero by
//! construction ("added latency", proxy CPU) get no ratio to direct, which
//! would be meaningless; informational rows get no ratios at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::samples::median;
use crate::targets::Kind;

/// Which ratio columns a row fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ratios {
    /// Both: to direct and between proxies.
    Both,
    /// Only between proxies: the direct value is zero or not applicable.
    BetweenProxies,
    /// None: counts and settings, not performance.
    None,
}

struct Row {
    name: String,
    decimals: usize,
    ratios: Ratios,
    rounds: BTreeMap<Kind, Vec<f64>>,
    /// Whether `decimals` and `ratios` have been set by a first value.
    settled: bool,
}

/// Every figure of a run, plus notes on anything that fell short.
#[derive(Default)]
pub struct Results {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Results {
    /// Reserves a row's place in the table before its first value, so
    /// rows that direct has no value for still come in their workload's
    /// order. Precision and ratios come from the first [`Results::add`].
    pub fn declare(&mut self, name: &str) {
        if !self.rows.iter().any(|r| r.name == name) {
            self.rows.push(Row {
                name: name.to_string(),
                decimals: 0,
                ratios: Ratios::None,
                rounds: BTreeMap::new(),
                settled: false,
            });
        }
    }

    /// Records one round's `value` of metric `name` for `kind`. The first
    /// call for a name fixes its place, precision and ratio columns.
    pub fn add(&mut self, name: &str, decimals: usize, ratios: Ratios, kind: Kind, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.declare(name);
        let Some(row) = self.rows.iter_mut().find(|r| r.name == name) else {
            return;
        };
        if !row.settled {
            (row.decimals, row.ratios, row.settled) = (decimals, ratios, true);
        }
        row.rounds.entry(kind).or_default().push(value);
    }

    /// The median so far of `name` for `kind`.
    pub fn median(&self, name: &str, kind: Kind) -> Option<f64> {
        let row = self.rows.iter().find(|r| r.name == name)?;
        median(row.rounds.get(&kind)?)
    }

    /// A note printed under the table, once.
    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    /// The Markdown table and the notes.
    pub fn markdown(&self, kinds: &[Kind]) -> String {
        let ratio_cols: Vec<(Kind, Kind)> = [Kind::Switchyard, Kind::Nginx, Kind::Haproxy]
            .into_iter()
            .map(|k| (k, Kind::Direct))
            .chain([
                (Kind::Switchyard, Kind::Nginx),
                (Kind::Switchyard, Kind::Pingora),
                (Kind::Pingora, Kind::Nginx),
                (Kind::Haproxy, Kind::Nginx),
            ])
            .filter(|(a, b)| kinds.contains(a) && kinds.contains(b))
            .collect();
        let mut out = String::from("| Metric |");
        for k in kinds {
            let _ = write!(out, " {} |", k.label());
        }
        for (a, b) in &ratio_cols {
            let _ = write!(out, " {} ÷ {} |", a.label(), b.label());
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(kinds.len() + ratio_cols.len()));
        out.push('\n');
        for row in self.rows.iter().filter(|r| !r.rounds.is_empty()) {
            let value = |k: Kind| row.rounds.get(&k).and_then(|v| median(v));
            let _ = write!(out, "| {} |", row.name);
            for k in kinds {
                match value(*k) {
                    Some(v) => {
                        let _ = write!(out, " {} |", fmt(v, row.decimals));
                    }
                    None => out.push_str(" — |"),
                }
            }
            for (a, b) in &ratio_cols {
                let wanted = match row.ratios {
                    Ratios::Both => true,
                    Ratios::BetweenProxies => *b != Kind::Direct,
                    Ratios::None => false,
                };
                match (wanted, value(*a), value(*b)) {
                    (true, Some(x), Some(y)) if y.abs() > f64::EPSILON => {
                        let _ = write!(out, " {:.2}× |", x / y);
                    }
                    _ => out.push_str(" — |"),
                }
            }
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes from this run:\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

/// A number with thousands separators for large values.
fn fmt(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}
