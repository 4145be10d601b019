//! Prometheus text metrics: requests by endpoint and status, attestation verdicts by reason, latency
//! histograms by endpoint, connections (open, accepted, refused and closed by reason), the configured
//! limits, the audit writer's batches and fsync time, and the process's CPU time (so a load generator can
//! divide server CPU by work).

use super::config::Limits;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(&'static str, u16), u64>,
    verdicts: BTreeMap<(&'static str, &'static str), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Connection counters, kept apart from the lock: the accept loop updates them.
    pub connections: ConnectionStats,
}

/// What happened to connections, counted with atomics.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections admitted (TLS started).
    pub accepted: AtomicU64,
    /// Connections finished (the gauge of open ones is accepted − finished).
    pub finished: AtomicU64,
    /// Refused: the address had its maximum of open connections.
    pub refused_per_address_connections: AtomicU64,
    /// Refused: the address opened connections faster than its rate.
    pub refused_per_address_rate: AtomicU64,
    /// Closed: the TLS handshake did not finish within `header_timeout_secs`.
    pub handshake_timeouts: AtomicU64,
    /// Closed: the TLS handshake failed (bad client certificate, not TLS 1.3, garbage).
    pub handshake_failures: AtomicU64,
    /// Closed: a request's headers did not arrive within `header_timeout_secs` (idle connections too).
    pub header_timeouts: AtomicU64,
    /// Closed: an answer was not taken within `write_timeout_secs` (shared with each connection's deadline).
    pub write_timeouts: Arc<AtomicU64>,
    /// Closed after `max_requests_per_connection` answers.
    pub request_limit_closes: AtomicU64,
}

impl ConnectionStats {
    /// Count one refusal at admission.
    pub fn refused(&self, why: super::admission::Refused) {
        let counter = match why {
            super::admission::Refused::PerAddressConnections => {
                &self.refused_per_address_connections
            }
            super::admission::Refused::PerAddressRate => &self.refused_per_address_rate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let accepted = get(&self.accepted);
        let open = accepted.saturating_sub(get(&self.finished));
        let _ = writeln!(
            out,
            "# HELP cvm_attest_connections_open Connections open now."
        );
        let _ = writeln!(out, "# TYPE cvm_attest_connections_open gauge");
        let _ = writeln!(out, "cvm_attest_connections_open {open}");
        let _ = writeln!(
            out,
            "# HELP cvm_attest_connections_accepted_total Connections admitted (TLS handshake started)."
        );
        let _ = writeln!(out, "# TYPE cvm_attest_connections_accepted_total counter");
        let _ = writeln!(out, "cvm_attest_connections_accepted_total {accepted}");
        let _ = writeln!(
            out,
            "# HELP cvm_attest_connections_refused_total Connections closed at accept, by the limit they hit."
        );
        let _ = writeln!(out, "# TYPE cvm_attest_connections_refused_total counter");
        for (reason, c) in [
            (
                "per_address_connections",
                &self.refused_per_address_connections,
            ),
            ("per_address_rate", &self.refused_per_address_rate),
        ] {
            let _ = writeln!(
                out,
                "cvm_attest_connections_refused_total{{reason=\"{reason}\"}} {}",
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cvm_attest_connections_closed_total Connections the service closed early, by reason."
        );
        let _ = writeln!(out, "# TYPE cvm_attest_connections_closed_total counter");
        for (reason, c) in [
            ("handshake_timeout", &self.handshake_timeouts),
            ("handshake_failed", &self.handshake_failures),
            ("header_timeout", &self.header_timeouts),
            ("write_timeout", &*self.write_timeouts),
            ("request_limit", &self.request_limit_closes),
        ] {
            let _ = writeln!(
                out,
                "cvm_attest_connections_closed_total{{reason=\"{reason}\"}} {}",
                get(c)
            );
        }
    }
}

/// The configured `[limits]` in Prometheus text: one gauge sample per limit.
pub fn render_limits(l: &Limits) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP cvm_attest_limit The configured [limits] of the service (README \"cvm-attest serve\")."
    );
    let _ = writeln!(out, "# TYPE cvm_attest_limit gauge");
    let limits: [(&str, f64); 12] = [
        ("max_connections", l.max_connections as f64),
        (
            "max_connections_per_address",
            l.max_connections_per_address as f64,
        ),
        (
            "connection_rate_per_address",
            f64::from(l.connection_rate_per_address),
        ),
        (
            "connection_burst_per_address",
            f64::from(l.connection_burst_per_address),
        ),
        ("header_timeout_secs", l.header_timeout_secs as f64),
        ("body_timeout_secs", l.body_timeout_secs as f64),
        ("write_timeout_secs", l.write_timeout_secs as f64),
        ("max_header_bytes", l.max_header_bytes as f64),
        (
            "max_requests_per_connection",
            f64::from(l.max_requests_per_connection),
        ),
        ("max_body_bytes", crate::protocol::MAX_BODY as f64),
        ("nonce_ttl_secs", l.nonce_ttl_secs as f64),
        ("token_ttl_secs", l.token_ttl_secs as f64),
    ];
    for (name, value) in limits {
        let _ = writeln!(out, "cvm_attest_limit{{limit=\"{name}\"}} {value}");
    }
    out
}

impl Metrics {
    /// Count one request to `endpoint` answered with `status` after `elapsed`.
    pub fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests.entry((endpoint, status)).or_default() += 1;
        let h = m.latency.entry(endpoint).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Count one attestation outcome: `"release"` or a reason code, for `tee`.
    pub fn verdict(&self, tee: &'static str, outcome: &'static str) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.verdicts.entry((tee, outcome)).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP cvm_attest_requests_total Requests by endpoint and HTTP status."
        );
        let _ = writeln!(out, "# TYPE cvm_attest_requests_total counter");
        for ((endpoint, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "cvm_attest_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP cvm_attest_verdicts_total Attestations by TEE and outcome (release or reason code)."
        );
        let _ = writeln!(out, "# TYPE cvm_attest_verdicts_total counter");
        for ((tee, outcome), n) in &m.verdicts {
            let _ = writeln!(
                out,
                "cvm_attest_verdicts_total{{tee=\"{tee}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP cvm_attest_request_duration_seconds Request latency by endpoint."
        );
        let _ = writeln!(out, "# TYPE cvm_attest_request_duration_seconds histogram");
        for (endpoint, h) in &m.latency {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cvm_attest_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "cvm_attest_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "cvm_attest_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "cvm_attest_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                h.count
            );
        }
        drop(m);
        self.connections.render(&mut out);
        if let Some(cpu) = process_cpu_seconds() {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total User and system CPU time of the service."
            );
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
            let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
        }
        out
    }
}

/// The audit writer's counters in Prometheus text: batches (one fsync each), records, and seconds spent
/// writing and fsyncing.
pub fn render_audit(c: crate::store::audit::CommitCounts) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP cvm_attest_audit_batches_total Audit batches written, one fsync each."
    );
    let _ = writeln!(out, "# TYPE cvm_attest_audit_batches_total counter");
    let _ = writeln!(out, "cvm_attest_audit_batches_total {}", c.batches);
    let _ = writeln!(
        out,
        "# HELP cvm_attest_audit_records_total Audit records written."
    );
    let _ = writeln!(out, "# TYPE cvm_attest_audit_records_total counter");
    let _ = writeln!(out, "cvm_attest_audit_records_total {}", c.records);
    let _ = writeln!(
        out,
        "# HELP cvm_attest_audit_sync_seconds_total Seconds spent writing and fsyncing audit batches."
    );
    let _ = writeln!(out, "# TYPE cvm_attest_audit_sync_seconds_total counter");
    let _ = writeln!(
        out,
        "cvm_attest_audit_sync_seconds_total {}",
        c.sync_seconds
    );
    out
}

/// The secret store's generation in Prometheus text (it only grows; compare it with a copy kept elsewhere).
pub fn render_store(generation: u64) -> String {
    format!(
        "# HELP cvm_attest_store_generation Changes written to the secret store's manifest (only grows).\n\
         # TYPE cvm_attest_store_generation gauge\ncvm_attest_store_generation {generation}\n"
    )
}

/// Linux's USER_HZ as exposed in /proc (fixed at 100 on every architecture's userspace ABI).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of this process, from /proc/self/stat.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the command (0-based from state).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Read one sample's value from a Prometheus text (exact series name with labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_cpu() {
        let m = Metrics::default();
        m.request("attest", 200, Duration::from_millis(3));
        m.verdict("snp", "release");
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                "cvm_attest_requests_total{endpoint=\"attest\",status=\"200\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "cvm_attest_request_duration_seconds_bucket{endpoint=\"attest\",le=\"0.002\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "cvm_attest_request_duration_seconds_bucket{endpoint=\"attest\",le=\"0.005\"}"
            ),
            Some(1.0)
        );
        assert!(sample(&text, "process_cpu_seconds_total").is_some());
    }

    #[test]
    fn renders_connections_and_every_limit() {
        let m = Metrics::default();
        m.connections.accepted.fetch_add(3, Ordering::Relaxed);
        m.connections.finished.fetch_add(1, Ordering::Relaxed);
        m.connections
            .refused(crate::server::admission::Refused::PerAddressRate);
        m.connections.write_timeouts.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        assert_eq!(sample(&text, "cvm_attest_connections_open"), Some(2.0));
        assert_eq!(
            sample(
                &text,
                "cvm_attest_connections_refused_total{reason=\"per_address_rate\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "cvm_attest_connections_closed_total{reason=\"write_timeout\"}"
            ),
            Some(2.0)
        );
        let limits = render_limits(&Limits::default());
        assert_eq!(
            sample(
                &limits,
                "cvm_attest_limit{limit=\"max_connections_per_address\"}"
            ),
            Some(64.0)
        );
        assert_eq!(
            limits
                .lines()
                .filter(|l| l.starts_with("cvm_attest_limit{"))
                .count(),
            12
        );
    }

    #[test]
    fn renders_the_audit_writer_counters() {
        let text = render_audit(crate::store::audit::CommitCounts {
            batches: 2,
            records: 5,
            sync_seconds: 0.25,
        });
        assert_eq!(sample(&text, "cvm_attest_audit_batches_total"), Some(2.0));
        assert_eq!(sample(&text, "cvm_attest_audit_records_total"), Some(5.0));
        assert_eq!(
            sample(&text, "cvm_attest_audit_sync_seconds_total"),
            Some(0.25)
        );
    }
}
