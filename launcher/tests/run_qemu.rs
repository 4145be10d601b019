//! `cvm-launch run --vmm qemu` as a process with the real QEMU and kernel of the guest kit: how the guest
//! ended becomes the exit code (power-off 0, panic → reset 3, `--timeout` 4), the host's loopback is the only
//! place the guest reaches, QEMU too old for SNP is refused before anything starts, and flags of the QEMU
//! engine are refused for the built-in one. Tests that boot print a skip line where the guest kit is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use cvm_launch::kit::Kit;

const LAUNCH: &str = env!("CARGO_BIN_EXE_cvm-launch");

fn kit(test: &str) -> Option<Kit> {
    let build = Path::new(LAUNCH).parent().unwrap();
    match cvm_launch::kit::find(&cvm_launch::kit::default_dir(build)) {
        Ok(k) => Some(k),
        Err(m) => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test}: no Linux guest here: missing {m}"
            );
            None
        }
    }
}

/// A guest image without agent whose workload is `sh -c SCRIPT` (with `network`, the static address).
fn image(kit: &Kit, dir: &Path, script: &str, network: bool) -> std::path::PathBuf {
    let out = dir.join("guest.img");
    let status = Command::new(LAUNCH)
        .args(["image", "--no-agent", "--out"])
        .arg(&out)
        .arg("--busybox")
        .arg(&kit.busybox)
        .arg("--kernel-modules")
        .arg(&kit.modules)
        .args(if network {
            &[][..]
        } else {
            &["--no-network"][..]
        })
        .args(["--", "/bin/sh", "-c", script])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    out
}

fn boot(kit: &Kit, dir: &Path, image: &Path, extra: &[&str]) -> Output {
    let sim = common::sim_dir(dir, b"run_qemu: a fixed simulator seed");
    Command::new(LAUNCH)
        .args(["run", "--vmm", "qemu", "--tee", "sim", "--accel", "tcg"])
        .arg("--sim-dir")
        .arg(&sim)
        .arg("--qemu")
        .arg(&kit.qemu)
        .arg("--kernel")
        .arg(&kit.kernel)
        .arg("--initrd")
        .arg(image)
        .args(["--append", "console=ttyS0 panic=-1 quiet"])
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_guest_that_powers_off_exits_0_and_its_console_is_on_stdout() {
    let Some(kit) = kit("power-off") else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = image(&kit, dir.path(), "echo workload ran; exit 7", false);
    let out = boot(&kit, dir.path(), &img, &["--timeout", "240"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("cvm-guest: Linux version "), "{t}");
    let lines: Vec<&str> = console.lines().collect();
    let ran = lines.iter().position(|l| *l == "workload ran");
    assert!(
        ran.is_some_and(|i| lines.get(i + 1) == Some(&"cvm-guest: exit status 7")),
        "{t}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the guest powered off"),
        "{t}"
    );
}

#[test]
fn a_kernel_panic_is_a_reset_and_exits_3() {
    let Some(kit) = kit("panic") else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = image(
        &kit,
        dir.path(),
        "echo c > /proc/sysrq-trigger; sleep 600",
        false,
    );
    let out = boot(&kit, dir.path(), &img, &["--timeout", "240"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("the guest reset"), "{t}");
}

#[test]
fn a_guest_past_its_timeout_is_stopped_and_exits_4() {
    let Some(kit) = kit("timeout") else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = image(&kit, dir.path(), "echo waiting; sleep 600", false);
    let out = boot(&kit, dir.path(), &img, &["--timeout", "20"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("stopped after the 20 s timeout"), "{t}");
}

#[test]
fn the_guest_reaches_only_the_forwarded_service() {
    let Some(kit) = kit("restricted network") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A host service on loopback: the forwarded one answers; the host's other ports and the outside are
    // out of reach (slirp's gateway 10.0.2.2 would otherwise be the host).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut c = conn;
            let _ = c.write_all(b"hello from the forwarded service\n");
        }
    });
    let script = format!(
        "nc 10.0.2.100 443 </dev/null; echo forwarded=$?; \
         timeout 5 nc 10.0.2.2 {other_port} </dev/null; echo host=$?; \
         timeout 5 nc 1.1.1.1 80 </dev/null; echo outside=$?"
    );
    let img = image(&kit, dir.path(), &script, true);
    let p = port.to_string();
    let out = boot(
        &kit,
        dir.path(),
        &img,
        &["--attest-forward", &p, "--timeout", "240"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("hello from the forwarded service"), "{t}");
    assert!(t.contains("forwarded=0"), "{t}");
    assert!(!t.contains("host=0"), "{t}");
    assert!(!t.contains("outside=0"), "{t}");
    drop(other);
}

#[test]
fn qemu_too_old_for_snp_is_refused_before_anything_starts() {
    let Some(kit) = kit("QEMU version") else {
        return;
    };
    let version = Command::new(&kit.qemu).arg("--version").output().unwrap();
    let v = cvm_launch::qemu::version::parse(&String::from_utf8_lossy(&version.stdout)).unwrap();
    if v >= cvm_launch::qemu::version::MIN_SNP {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: this QEMU ({v}) can launch SNP guests; the refusal needs an older one"
        );
        return;
    }
    let out = Command::new(LAUNCH)
        .args([
            "run",
            "--vmm",
            "qemu",
            "--tee",
            "snp",
            "--cpu-type",
            "EPYC-v4",
        ])
        .args([
            "--firmware",
            "/nonexistent/OVMF.fd",
            "--kernel",
            "/nonexistent/bzImage",
        ])
        .arg("--qemu")
        .arg(&kit.qemu)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("needs QEMU 9.1.0 or later") && t.contains("nothing was started"),
        "{t}"
    );
}

#[test]
fn qemu_flags_are_refused_for_the_builtin_vmm() {
    let out = Command::new(LAUNCH)
        .args([
            "run",
            "--tee",
            "sim",
            "--kernel",
            "/nonexistent",
            "--disk",
            "x.img",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--disk needs --vmm qemu"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_relay_says_nothing_to_the_guest_when_the_service_is_down() {
    // QEMU hands the relay the guest's connection as stdin, stdout and stderr: a message would reach the
    // guest's TLS client as bytes of the stream.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Command::new(LAUNCH)
        .args(["relay", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let out = Command::new(LAUNCH)
        .args(["relay", "192.0.2.1:443"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.is_empty(), "{out:?}");
}
