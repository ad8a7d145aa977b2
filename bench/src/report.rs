//! The results of a run: counts, time, and a latency histogram, printed as
//! a table and as one JSON object.

use hdrhistogram::Histogram;

/// Highest latency the histograms record, microseconds (one hour).
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// A new latency histogram (3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// What one workload measured.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `produce`, `consume` or `e2e`.
    pub workload: String,
    /// Records counted.
    pub messages: u64,
    /// Bytes of record values counted.
    pub bytes: u64,
    /// Wall-clock time of the measured part, seconds.
    pub seconds: f64,
    /// Per-record latency, microseconds; `None` when the workload has none.
    pub latency_us: Option<Histogram<u64>>,
}

impl Summary {
    /// Records per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }

    /// MB (10^6 bytes of values) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }

    fn percentiles(&self) -> Option<[u64; 5]> {
        self.latency_us.as_ref().filter(|h| !h.is_empty()).map(|h| {
            [
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.90),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
            ]
        })
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<9} {:>12} {:>10} {:>9} {:>13} {:>10}\n",
            "workload", "records", "MB", "seconds", "records/s", "MB/s"
        ));
        out.push_str(&format!(
            "{:<9} {:>12} {:>10.1} {:>9.2} {:>13.0} {:>10.1}\n",
            self.workload,
            self.messages,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.msgs_per_sec(),
            self.mb_per_sec()
        ));
        if let Some([p50, p90, p99, p999, max]) = self.percentiles() {
            out.push_str(&format!(
                "latency us: p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  max {max}\n"
            ));
        }
        out
    }

    /// The one-line JSON summary.
    pub fn json(&self) -> serde_json::Value {
        let latency = match self.percentiles() {
            Some([p50, p90, p99, p999, max]) => serde_json::json!({
                "p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": max,
            }),
            None => serde_json::json!({
                "p50": null, "p90": null, "p99": null, "p999": null, "max": null,
            }),
        };
        serde_json::json!({
            "workload": self.workload,
            "messages": self.messages,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "msgs_per_sec": self.msgs_per_sec(),
            "mb_per_sec": self.mb_per_sec(),
            "latency_us": latency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_reports_rates_and_percentiles() {
        let mut h = latency_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let s = Summary {
            workload: "produce".into(),
            messages: 2_000,
            bytes: 2_000_000,
            seconds: 2.0,
            latency_us: Some(h),
        };
        assert_eq!(s.msgs_per_sec(), 1000.0);
        assert_eq!(s.mb_per_sec(), 1.0);
        let j = s.json();
        assert_eq!(j["latency_us"]["p50"], 500);
        assert_eq!(j["latency_us"]["max"], 1000);
        assert!(s.table().contains("p99.9"));
        let none = Summary {
            latency_us: None,
            ..s
        };
        assert!(none.json()["latency_us"]["p99"].is_null());
    }
}
