//! The text report of `cvm-attest bench serve`: one table row per run, Little's law for each closed loop,
//! and the TDX/SNP throughput ratio.

use super::{BenchArgs, Connection, RunResult};
use crate::protocol::TeeKind;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(idx).copied().unwrap_or(f64::NAN)
}

/// The report text for `results`, with the raw verify costs `p384` and `p256` (CPU seconds).
pub(super) fn report(args: &BenchArgs, p384: f64, p256: f64, results: &[RunResult]) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = format!(
        "cvm-attest bench serve: {} clients, {} s per run, {} cores shared by the server and the clients\n\
         raw ring verify (CPU time, mean of before and after the runs): P-384 {:.1} us ({:.0}/s), \
         P-256 {:.1} us ({:.0}/s)\n\
         latency in ms; CPU in us per attestation (server: all replicas); x raw: server CPU / one raw verify \
         of the kind, sampled through the run (and idle); audit: commits (fsyncs) per attestation and their \
         mean ms; db CPU: the PostgreSQL server's own CPU (its processes, on the same cores)\n\
         {:<11} {:<4} {:<10} {:<16} {:>7} {:>6} {:>15} {:>15} {:>10} {:>12} {:>10} {:>11} {:>7}\n",
        args.clients,
        args.seconds,
        cores,
        p384 * 1e6,
        1.0 / p384,
        p256 * 1e6,
        1.0 / p256,
        "store",
        "tee",
        "connection",
        "load",
        "att/s",
        "errors",
        "attest p50/p99",
        "flow p50/p99",
        "server CPU",
        "x raw",
        "client CPU",
        "audit",
        "db CPU",
    );
    for r in results {
        let (name, raw) = match r.tee {
            TeeKind::Snp => ("SNP", p384),
            TeeKind::Tdx => ("TDX", p256),
        };
        let per = |cpu: f64| {
            if r.ok > 0 {
                cpu / r.ok as f64
            } else {
                f64::NAN
            }
        };
        let server = per(r.server_cpu);
        let load = match r.rate {
            Some(rate) => format!("paced {rate:.0}/s"),
            None => "closed loop".into(),
        };
        out.push_str(&format!(
            "{:<11} {name:<4} {:<10} {load:<16} {:>7.0} {:>6} {:>15} {:>15} {:>10.0} {:>12} {:>10.0} {:>11} {:>7}\n",
            r.store,
            r.connection.name(),
            r.rate(),
            r.errors,
            format!(
                "{:.2}/{:.2}",
                percentile(&r.attest_latency, 0.5) * 1e3,
                percentile(&r.attest_latency, 0.99) * 1e3
            ),
            format!(
                "{:.2}/{:.2}",
                percentile(&r.flow_latency, 0.5) * 1e3,
                percentile(&r.flow_latency, 0.99) * 1e3
            ),
            server * 1e6,
            format!("{:.2} ({:.2})", server / r.raw_in_run, server / raw),
            per(r.client_cpu) * 1e6,
            format!(
                "{:.2} {:.1}",
                per(r.audit_batches),
                r.audit_sync / r.audit_batches * 1e3
            ),
            r.db_cpu
                .map_or_else(|| "-".to_owned(), |c| format!("{:.0}", per(c) * 1e6)),
        ));
    }
    for r in results.iter().filter(|r| r.rate.is_none() && r.ok > 0) {
        // Little's law for a closed loop without think time: mean flow latency = clients / throughput.
        let cpu = (r.server_cpu + r.client_cpu) / r.ok as f64;
        out.push_str(&format!(
            "{} {} {} closed loop: mean flow latency = {} clients / {:.0}/s = {:.1} ms (Little's law); \
             a mean of 25 ms would need {:.0}/s, and {cores} cores at {:.0} us of server + client CPU \
             per flow allow at most {:.0}/s\n",
            r.store,
            match r.tee {
                TeeKind::Snp => "SNP",
                TeeKind::Tdx => "TDX",
            },
            r.connection.name(),
            args.clients,
            r.rate(),
            args.clients as f64 / r.rate() * 1e3,
            args.clients as f64 / 0.025,
            cpu * 1e6,
            cores as f64 / cpu,
        ));
    }
    let mut stores: Vec<&str> = results.iter().map(|r| r.store.as_str()).collect();
    stores.dedup();
    for store in stores {
        for connection in [Connection::KeepAlive, Connection::PerFlow] {
            let closed = |tee| {
                results.iter().find(|r| {
                    r.store == store
                        && r.tee == tee
                        && r.connection == connection
                        && r.rate.is_none()
                })
            };
            if let (Some(snp), Some(tdx)) = (closed(TeeKind::Snp), closed(TeeKind::Tdx)) {
                out.push_str(&format!(
                    "{store}: TDX/SNP attestations/s (closed loop, {}): {:.2}\n",
                    connection.name(),
                    tdx.rate() / snp.rate()
                ));
            }
        }
    }
    out
}
