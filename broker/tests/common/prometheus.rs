//! Reading a `/metrics` body as Prometheus's text format, every line's
//! syntax checked on the way.

use std::collections::BTreeMap;

/// The samples of a Prometheus text body, `name{labels}` → value,
/// checking every line's syntax on the way.
pub fn parse_prometheus(body: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let kind = comment.split_whitespace().next().unwrap_or_default();
            assert!(["HELP", "TYPE"].contains(&kind), "comment line {line:?}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "labels in {line:?}");
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
        };
        samples.insert(series.to_string(), value);
    }
    samples
}

/// The value of the series whose name and labels contain every part of
/// `parts`, if one does.
pub fn sample(samples: &BTreeMap<String, f64>, parts: &[&str]) -> Option<f64> {
    samples
        .iter()
        .find(|(series, _)| parts.iter().all(|p| series.contains(p)))
        .map(|(_, v)| *v)
}

/// The sum of every series whose name and labels contain every part of
/// `parts`.
pub fn sum(samples: &BTreeMap<String, f64>, parts: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| parts.iter().all(|p| series.contains(p)))
        .map(|(_, v)| *v)
        .sum()
}
