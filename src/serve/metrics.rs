//! Counters the server keeps, and their Prometheus text exposition (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the request latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    /// (route, status) → requests.
    requests: BTreeMap<(String, u16), u64>,
    tokens_generated: u64,
    /// Jobs stopped because their client went away.
    cancelled: u64,
    /// Of the last finished generation.
    tokens_per_second: f64,
    /// Per bucket of [`LATENCY_BUCKETS`] (not cumulative), then the overflow.
    latency: [u64; LATENCY_BUCKETS.len() + 1],
    latency_sum: f64,
}

impl Metrics {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Plain counters stay meaningful after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let mut c = self.counters();
        *c.requests.entry((route.to_string(), status)).or_default() += 1;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        c.latency[bucket] += 1;
        c.latency_sum += seconds;
    }

    pub fn generated(&self, tokens: usize, seconds: f64) {
        let mut c = self.counters();
        c.tokens_generated += tokens as u64;
        if seconds > 0.0 {
            c.tokens_per_second = tokens as f64 / seconds;
        }
    }

    pub fn cancelled(&self) {
        self.counters().cancelled += 1;
    }

    /// The Prometheus text format (version 0.0.4).
    pub fn render(&self, queue_depth: usize) -> String {
        let c = self.counters();
        let mut out = String::new();
        out.push_str("# HELP illume_requests_total Requests answered, by route and HTTP status.\n");
        out.push_str("# TYPE illume_requests_total counter\n");
        for ((route, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "illume_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP illume_queue_depth Requests waiting for or running on the model.\n");
        out.push_str("# TYPE illume_queue_depth gauge\n");
        let _ = writeln!(out, "illume_queue_depth {queue_depth}");
        out.push_str("# HELP illume_tokens_generated_total Tokens the MLLM generated.\n");
        out.push_str("# TYPE illume_tokens_generated_total counter\n");
        let _ = writeln!(out, "illume_tokens_generated_total {}", c.tokens_generated);
        out.push_str(
            "# HELP illume_requests_cancelled_total Jobs stopped because the client went away.\n",
        );
        out.push_str("# TYPE illume_requests_cancelled_total counter\n");
        let _ = writeln!(out, "illume_requests_cancelled_total {}", c.cancelled);
        out.push_str(
            "# HELP illume_tokens_per_second Generation speed of the last finished request.\n",
        );
        out.push_str("# TYPE illume_tokens_per_second gauge\n");
        let _ = writeln!(out, "illume_tokens_per_second {}", c.tokens_per_second);
        out.push_str("# HELP illume_request_duration_seconds Request latency.\n");
        out.push_str("# TYPE illume_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += c.latency[i];
            let _ = writeln!(
                out,
                "illume_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = cumulative + c.latency[LATENCY_BUCKETS.len()];
        let _ = writeln!(
            out,
            "illume_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "illume_request_duration_seconds_sum {}", c.latency_sum);
        let _ = writeln!(out, "illume_request_duration_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_requests_and_fills_cumulative_buckets() {
        let m = Metrics::default();
        m.request("/v1/chat/completions", 200, 0.07);
        m.request("/v1/chat/completions", 200, 3.0);
        m.request("/v1/chat/completions", 429, 500.0);
        m.generated(10, 2.0);
        let text = m.render(2);
        for line in [
            "illume_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
            "illume_requests_total{route=\"/v1/chat/completions\",status=\"429\"} 1",
            "illume_queue_depth 2",
            "illume_tokens_generated_total 10",
            "illume_tokens_per_second 5",
            "illume_request_duration_seconds_bucket{le=\"0.05\"} 0",
            "illume_request_duration_seconds_bucket{le=\"0.1\"} 1",
            "illume_request_duration_seconds_bucket{le=\"5\"} 2",
            "illume_request_duration_seconds_bucket{le=\"120\"} 2",
            "illume_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "illume_request_duration_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "`{line}` missing:\n{text}");
        }
    }
}
