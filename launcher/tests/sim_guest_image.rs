//! `guest/sim-guest.bin` is exactly what GNU as/ld make of `guest/sim-guest.S` (skips without them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn checked_in_guest_binary_rebuilds_identically() {
    if !have("as") || !have("ld") {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: GNU as/ld not installed (apt-get install binutils)"
        );
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let tmp = tempfile::tempdir().unwrap();
    let obj = tmp.path().join("sim-guest.o");
    let bin = tmp.path().join("sim-guest.bin");
    let st = Command::new("as")
        .arg("--32")
        .arg("-o")
        .arg(&obj)
        .arg(dir.join("sim-guest.S"))
        .status()
        .unwrap();
    assert!(st.success(), "as failed");
    let st = Command::new("ld")
        .args([
            "-m",
            "elf_i386",
            "-Ttext=0xf000",
            "--oformat",
            "binary",
            "-o",
        ])
        .arg(&bin)
        .arg(&obj)
        .status()
        .unwrap();
    assert!(st.success(), "ld failed");
    let rebuilt = std::fs::read(&bin).unwrap();
    let checked_in = std::fs::read(dir.join("sim-guest.bin")).unwrap();
    assert_eq!(rebuilt.len(), 4096);
    assert!(
        rebuilt == checked_in,
        "guest/sim-guest.bin is stale: rebuild it with the commands in guest/sim-guest.S"
    );
    // The reset vector (last 16 bytes, GPA 0xFFFFFFF0) starts with a near jump.
    assert_eq!(checked_in[0xff0], 0xe9);
}
