//! Start-up time of `cvm-agent unlock --tee sim`, from spawning the process to its first network request
//! (the TCP connection to the service), over 20 runs: a listener on loopback records when the agent
//! connects, then closes the connection (the agent, with `--attempts 1`, gives up at once).
//!
//! A measurement, not a timed test: it asserts only that every run connected, and prints the figures.
//! Run it on the release binary:
//! `cargo build --release -p cvm-agent && CVM_AGENT_BIN=target/release/cvm-agent \
//!  cargo test -p cvm-agent --test startup -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, PspSocket};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 20;

#[test]
fn start_up_to_the_first_network_request() {
    let bin =
        std::env::var("CVM_AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cvm-agent").into());
    let f = Fixture::new("127.0.0.1:0");
    let psp = PspSocket::start(common::MEASUREMENT);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let ca = f.ca().display().to_string();
    let sock = psp.path.display().to_string();
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut child = Command::new(&bin)
            .args(["unlock", "--server", &url, "--ca", &ca, "--resource", "r"])
            .args(["--tee", "sim", "--sim-socket", &sock, "--attempts", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (conn, _) = listener.accept().unwrap();
        times.push(start.elapsed());
        drop(conn);
        let status = child.wait().unwrap();
        // Unreachable after its one attempt (the connection closed before TLS).
        assert_eq!(status.code(), Some(4));
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = (times[RUNS / 2 - 1] + times[RUNS / 2]) / 2;
    let p90 = times[(RUNS * 9).div_ceil(10) - 1];
    println!(
        "cvm-agent start-up to first network request ({bin}), {RUNS} runs: median {:.2} ms, p90 {:.2} ms, \
         min {:.2} ms, max {:.2} ms",
        ms(median),
        ms(p90),
        ms(times[0]),
        ms(times[RUNS - 1])
    );
}
