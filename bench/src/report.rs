//! Figures, targets and the two outputs: `RESULTS.md` for people, `results.json` for machines
//! (and for `--compare`).

use std::fmt::Write as _;

use crate::stats::Summary;

/// What a figure must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The measured median minus the baseline median, in the figure's unit, at most this.
    Added(f64),
    /// The measured median over the baseline median, at most this.
    Ratio(f64),
    /// The measured median itself, at most this.
    Max(f64),
}

/// The reference script's figure beside ours, where one applies.
#[derive(Debug, Clone)]
pub enum Reference {
    None,
    /// Which option would have given it.
    NotGiven(&'static str),
    Measured {
        label: String,
        ours: Summary,
        theirs: Summary,
    },
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub figure: String,
    pub unit: &'static str,
    pub target: Target,
    pub measured: Summary,
    pub baseline_label: String,
    pub baseline: Summary,
    pub reference: Reference,
}

impl Row {
    pub fn added(&self) -> f64 {
        self.measured.median - self.baseline.median
    }

    pub fn ratio(&self) -> f64 {
        self.measured.median / self.baseline.median
    }

    /// The value the target is checked against.
    pub fn checked(&self) -> f64 {
        match self.target {
            Target::Added(_) => self.added(),
            Target::Ratio(_) => self.ratio(),
            Target::Max(_) => self.measured.median,
        }
    }

    pub fn met(&self) -> bool {
        match self.target {
            Target::Added(t) | Target::Ratio(t) | Target::Max(t) => self.checked() <= t,
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::Added(t) => format!("≤ {} {} added", num(t), self.unit),
            Target::Ratio(t) => format!("≤ {}x", num(t)),
            Target::Max(t) => format!("≤ {} {}", num(t), self.unit),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let (kind, limit) = match self.target {
            Target::Added(t) => ("added", t),
            Target::Ratio(t) => ("ratio", t),
            Target::Max(t) => ("max", t),
        };
        let reference = match &self.reference {
            Reference::None => serde_json::Value::Null,
            Reference::NotGiven(flag) => serde_json::json!({ "not_given": flag }),
            Reference::Measured {
                label,
                ours,
                theirs,
            } => serde_json::json!({
                "label": label, "ours": ours.to_json(), "reference": theirs.to_json(),
                "ratio": theirs.median / ours.median,
            }),
        };
        serde_json::json!({
            "id": self.id, "figure": self.figure, "unit": self.unit,
            "target": { "kind": kind, "limit": limit },
            "measured": self.measured.to_json(),
            "baseline": { "label": self.baseline_label, "summary": self.baseline.to_json() },
            "added": self.added(), "ratio": self.ratio(), "checked": self.checked(), "met": self.met(),
            "reference": reference,
        })
    }
}

/// A number with the precision a table wants.
pub fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn spread(s: &Summary) -> String {
    format!("{} [{}–{}]", num(s.median), num(s.p10), num(s.p90))
}

/// The results table (Markdown).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | target | measured: median [p10–p90] | baseline | baseline: median [p10–p90] | added | ratio | n | met |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} | {} {} | {:+} {} | {}x | {} | {} |",
            r.figure,
            r.target_text(),
            spread(&r.measured),
            r.unit,
            r.baseline_label,
            spread(&r.baseline),
            r.unit,
            num(r.added()),
            r.unit,
            num(r.ratio()),
            r.measured.n,
            if r.met() { "yes" } else { "**NO**" },
        );
    }
    out.replace("+-", "−")
}

/// The reference scripts' figures beside ours, or a line per figure saying why there are none.
pub fn reference_section(rows: &[Row]) -> String {
    let mut measured = String::new();
    let mut missing = String::new();
    for r in rows {
        match &r.reference {
            Reference::None => {}
            Reference::NotGiven(flag) => {
                let _ = writeln!(
                    missing,
                    "- {}: reference not measured (no `{flag}` given).",
                    r.figure
                );
            }
            Reference::Measured {
                label,
                ours,
                theirs,
            } => {
                let _ = writeln!(
                    measured,
                    "| {} | {} {} | {} | {} {} | {}x |",
                    r.figure,
                    spread(ours),
                    r.unit,
                    label,
                    spread(theirs),
                    r.unit,
                    num(theirs.median / ours.median),
                );
            }
        }
    }
    let mut out = String::new();
    if !measured.is_empty() {
        out.push_str(
            "| figure | ours (same stand-ins) | reference | reference: median [p10–p90] | reference / ours |\n\
             |---|---|---|---|---|\n",
        );
        out.push_str(&measured);
        out.push('\n');
    }
    out.push_str(&missing);
    out
}

/// Old against new, row by row, from two `results.json` files.
pub fn compare(old: &serde_json::Value, rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | old checked value | new checked value | change | old met | new met |\n|---|---|---|---|---|---|\n",
    );
    let empty = Vec::new();
    let old_rows = old["rows"].as_array().unwrap_or(&empty);
    for r in rows {
        let Some(o) = old_rows.iter().find(|o| o["id"] == r.id.as_str()) else {
            continue;
        };
        let (Some(ov), Some(om)) = (o["checked"].as_f64(), o["met"].as_bool()) else {
            continue;
        };
        let new = r.checked();
        let change = if ov.abs() > f64::EPSILON {
            format!("{:+.0}%", (new - ov) / ov.abs() * 100.0)
        } else {
            "—".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.figure,
            num(ov),
            num(new),
            change,
            if om { "yes" } else { "no" },
            if r.met() { "yes" } else { "no" },
        );
    }
    out
}
