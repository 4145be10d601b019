//! Boots the Linux kernel in `CVM_TEST_KERNEL` (bzImage; optional `CVM_TEST_INITRD`) with
//! `cvm-launch run --tee sim --kernel` and waits for the kernel's banner on the serial console.
//! The guest is stopped once the banner is seen. Without the variable (or without /dev/kvm) the
//! test prints why it skipped. `CVM_TEST_KERNEL_SECS` bounds the wait (default 1800 s: this
//! host's KVM runs guests slowly).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{sim_dir, skip_without_kvm};
use std::io::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn linux_prints_its_banner_on_the_serial_console() {
    let Some(kernel) = std::env::var_os("CVM_TEST_KERNEL") else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: set CVM_TEST_KERNEL=/path/to/bzImage to boot Linux (this host's KVM is slow)"
        );
        return;
    };
    if skip_without_kvm("booting Linux") {
        return;
    }
    let secs: u64 = std::env::var("CVM_TEST_KERNEL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let tmp = tempfile::tempdir().unwrap();
    let sim = sim_dir(tmp.path(), b"cvm-launch linux boot test seed!");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvm-launch"));
    cmd.args(["run", "--tee", "sim", "--kernel"])
        .arg(&kernel)
        .args(["--memory", "512", "--sim-dir"])
        .arg(&sim)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(initrd) = std::env::var_os("CVM_TEST_INITRD") {
        cmd.arg("--initrd").arg(initrd);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let deadline = start + Duration::from_secs(secs);
    let banner = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("Linux version") => break Some(line),
            Ok(line) => console.push(line),
            Err(_) => break None,
        }
    };
    let elapsed = start.elapsed();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let banner = banner.unwrap_or_else(|| {
        panic!(
            "no `Linux version` within {secs} s; console:\n{}\nstderr:\n{}",
            console.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!("banner after {:.1} s: {banner}", elapsed.as_secs_f64());
}
