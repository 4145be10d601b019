//! End-to-end: the four programs as separate processes on loopback. The demo itself for SNP- and
//! TDX-format evidence, with its Linux guest and with the built-in guest (and its no-KVM path); a service restarted between registration and
//! attestation; two guests with different measurements and two secrets, each getting only its own.
//! Where /dev/kvm is missing, guests are served by the simulated PSP without a VM, and the tests
//! say so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use cvm_launch::demo::stack::{EvidenceFormat, Guest, Stack};
use cvm_launch::demo::{TEST_GUEST, tampered};
use cvm_tests::{guest_kit, guests_run_in_vms, prepared_stack, programs};

fn demo(args: &[&str]) -> (bool, String) {
    let out = Command::new(programs().launch)
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

#[test]
fn the_demo_boots_a_linux_guest_that_unlocks_with_snp_and_with_tdx_evidence() {
    // Without the guest kit the demo would fetch it (apt-get as root): a test does not install packages, so
    // it runs the built-in guest then, after its skip line.
    let linux = guest_kit("demo with a Linux guest").is_some();
    let guest = if linux { "auto" } else { "builtin" };
    for tee in ["snp", "tdx"] {
        let (ok, text) = demo(&["--tee", tee, "--guest", guest]);
        assert!(ok, "demo --tee {tee}:\n{text}");
        assert!(last_line(&text).starts_with("demo: OK "), "{text}");
        assert!(
            text.contains("refused with POLICY_MEASUREMENT, as expected"),
            "{text}"
        );
        if linux {
            assert!(text.contains("guest kernel: Linux version "), "{text}");
            assert!(
                text.contains("in the guest: cvm-agent: /dev/vda opened as /dev/mapper/data"),
                "{text}"
            );
            assert!(text.contains("equal to the original's"), "{text}");
            assert!(
                text.contains("the disk stayed locked, the workload never ran"),
                "{text}"
            );
        } else {
            assert!(
                text.contains(
                    "refused with POLICY_MEASUREMENT, as expected: no secret, no output file"
                ),
                "{text}"
            );
        }
        // The working directory is gone.
        let dir = text
            .lines()
            .find_map(|l| l.split(", in ").nth(1))
            .expect("the demo names its directory");
        assert!(!Path::new(dir).exists(), "{dir} was left behind");
    }
}

#[test]
fn the_builtin_demo_succeeds_with_snp_and_with_tdx_evidence() {
    let kvm = guests_run_in_vms("demo");
    for tee in ["snp", "tdx"] {
        let (ok, text) = demo(&["--guest", "builtin", "--tee", tee]);
        assert!(ok, "demo --guest builtin --tee {tee}:\n{text}");
        let expected = if kvm {
            "demo: OK "
        } else {
            "demo: OK (no KVM) "
        };
        assert!(last_line(&text).starts_with(expected), "{text}");
        assert!(
            text.contains(
                "refused with POLICY_MEASUREMENT, as expected: no secret, no output file"
            ),
            "{text}"
        );
        if kvm {
            assert!(text.contains("printed it (1184 bytes) on COM1"), "{text}");
        }
    }
}

#[test]
fn the_demo_without_kvm_says_so_and_keeps_its_directory_on_request() {
    let (ok, text) = demo(&["--guest", "builtin", "--no-kvm", "--keep"]);
    assert!(ok, "{text}");
    assert!(last_line(&text).starts_with("demo: OK (no KVM) "), "{text}");
    assert!(text.contains("no KVM (--no-kvm given)"), "{text}");
    let kept = text
        .lines()
        .find_map(|l| l.strip_prefix("cvm-launch demo: kept "))
        .expect("the kept directory is printed");
    let kept = Path::new(kept);
    assert!(kept.join("workload.out").is_file());
    assert!(kept.join("state").is_dir());
    std::fs::remove_dir_all(kept).unwrap();
}

fn write(stack: &Stack, name: &str, bytes: &[u8]) {
    std::fs::write(stack.path(name), bytes).unwrap();
}

fn launch(stack: &Stack, vm: bool, image: &str, socket: &str) -> Guest {
    if vm {
        stack.launch(image, socket).unwrap()
    } else {
        stack.launch_without_vm(image, socket).unwrap()
    }
}

/// Seals `data` under a fresh key `KEY.key` into `NAME.sealed`.
fn sealed_workload(stack: &Stack, name: &str, data: &[u8]) {
    write(stack, &format!("{name}.txt"), data);
    stack.keygen(&format!("{name}.key")).unwrap();
    stack
        .seal(
            &format!("{name}.key"),
            &format!("{name}.txt"),
            &format!("{name}.sealed"),
        )
        .unwrap();
}

#[test]
fn secrets_registered_before_a_service_restart_are_released_after_it() {
    let vm = guests_run_in_vms("restart");
    let tmp = tempfile::tempdir().unwrap();
    let stack = prepared_stack(tmp.path()).unwrap();
    write(&stack, "guest.bin", TEST_GUEST);
    sealed_workload(
        &stack,
        "db",
        b"rows that only the measured guest may read\n",
    );
    let policy = stack.measure("guest.bin", EvidenceFormat::Snp).unwrap();
    write(&stack, "policy.toml", policy.as_bytes());

    let first = stack.start_service().unwrap();
    stack
        .register(&first, "db", "db.key", "policy.toml")
        .unwrap();
    first.stop();

    let second = stack.start_service().unwrap();
    let _guest = launch(&stack, vm, "guest.bin", "psp.sock");
    let done = stack
        .unlock(
            &second,
            "db",
            "psp.sock",
            EvidenceFormat::Snp,
            "db.sealed",
            "db.out",
        )
        .unwrap();
    assert!(done.status.success(), "{}", done.output);
    assert_eq!(
        std::fs::read(stack.path("db.out")).unwrap(),
        b"rows that only the measured guest may read\n"
    );
}

#[test]
fn two_guests_with_two_secrets_each_get_only_their_own() {
    let vm = guests_run_in_vms("two guests");
    let tmp = tempfile::tempdir().unwrap();
    let stack = prepared_stack(tmp.path()).unwrap();
    write(&stack, "a.bin", TEST_GUEST);
    write(&stack, "b.bin", &tampered());
    for format in [EvidenceFormat::Snp, EvidenceFormat::Tdx] {
        let (pa, pb) = (
            stack.measure("a.bin", format).unwrap(),
            stack.measure("b.bin", format).unwrap(),
        );
        assert_ne!(pa, pb, "different images measure differently");
        write(&stack, "a.toml", pa.as_bytes());
        write(&stack, "b.toml", pb.as_bytes());
        sealed_workload(&stack, "a", b"secret data of guest A\n");
        sealed_workload(&stack, "b", b"secret data of guest B\n");
        let service = stack.start_service().unwrap();
        stack.register(&service, "a", "a.key", "a.toml").unwrap();
        stack.register(&service, "b", "b.key", "b.toml").unwrap();
        let _ga = launch(&stack, vm, "a.bin", "a.sock");
        let _gb = launch(&stack, vm, "b.bin", "b.sock");
        for (guest, own, other) in [("a", "a", "b"), ("b", "b", "a")] {
            let sock = format!("{guest}.sock");
            let out = format!("{guest}-{own}.out");
            let done = stack
                .unlock(&service, own, &sock, format, &format!("{own}.sealed"), &out)
                .unwrap();
            assert!(done.status.success(), "{format:?} {guest}: {}", done.output);
            assert_eq!(
                std::fs::read(stack.path(&out)).unwrap(),
                format!("secret data of guest {}\n", own.to_uppercase()).as_bytes()
            );
            let out = format!("{guest}-{other}.out");
            let done = stack
                .unlock(
                    &service,
                    other,
                    &sock,
                    format,
                    &format!("{other}.sealed"),
                    &out,
                )
                .unwrap();
            assert!(
                !done.status.success(),
                "{format:?} {guest} got {other}'s secret"
            );
            assert!(
                done.output.contains("POLICY_MEASUREMENT"),
                "{}",
                done.output
            );
            assert!(!stack.path(&out).exists());
        }
        service.stop();
        for f in [
            "a.key", "b.key", "a.sealed", "b.sealed", "a-a.out", "b-b.out",
        ] {
            std::fs::remove_file(stack.path(f)).unwrap();
        }
    }
}
