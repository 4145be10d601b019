//! End-to-end with a real Linux guest under QEMU (TCG on a host without hardware virtualization): the
//! guest image from `cvm-launch image`, its reference value from `cvm-launch measure`, the secret on
//! `cvm-attest serve` in simulated mode, and `cvm-agent` inside the guest attesting over HTTPS through the
//! forwarded port, then unlocking: a LUKS2 volume opened with dm-crypt, a sealed file on a virtio disk,
//! the same with TDX-format evidence, and a tampered initrd refused. Where QEMU or a guest kernel is
//! missing, each test prints a skip line saying what to install.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use cvm_launch::demo::guest::{GuestRun, tamper_image};
use cvm_launch::demo::stack::{EvidenceFormat, Service, Stack};
use cvm_launch::kit::Kit;
use cvm_tests::{guest_kit, prepared_stack};

/// 1 MiB of data that does not compress and is the same in every run.
fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Whether any 32-byte run that starts a 4 KiB block of `plain` appears in `disk` at a sector boundary.
fn holds_plaintext_of(disk: &[u8], plain: &[u8]) -> bool {
    let blocks: HashSet<&[u8]> = plain.chunks_exact(4096).map(|b| &b[..32]).collect();
    disk.chunks(512)
        .filter(|s| s.len() >= 32)
        .any(|s| blocks.contains(&s[..32]))
}

fn write(stack: &Stack, name: &str, bytes: &[u8]) {
    if let Some(parent) = stack.path(name).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(stack.path(name), bytes).unwrap();
}

/// A stack with the service running and `data/payload.bin` written.
fn started(dir: &std::path::Path) -> (Stack, Service) {
    let stack = prepared_stack(dir).unwrap();
    write(&stack, "data/payload.bin", &payload());
    let service = stack.start_service().unwrap();
    (stack, service)
}

/// The workload line `sha256sum` prints for `path`.
fn sha_line(run: &GuestRun, path: &str) -> Option<String> {
    run.console
        .lines()
        .find(|l| l.ends_with(path) && l.len() == 64 + 2 + path.len())
        .map(|l| l[..64].to_owned())
}

/// Boots `image` with `disks` (the console in `console.log`).
fn boot(stack: &Stack, kit: &Kit, service: &Service, image: &str, disks: &[&str]) -> GuestRun {
    stack
        .boot_linux(kit, service, image, disks, "console.log", &[])
        .unwrap()
}

fn assert_powered_off(run: &GuestRun) {
    assert!(
        run.launcher.status.success() && run.launcher.output.contains("the guest powered off"),
        "cvm-launch run: {}\nconsole:\n{}",
        run.launcher.output,
        run.console
    );
}

/// A LUKS2 disk holding `data/` under the key `disk.key`, a guest image whose agent asks the simulated PSP
/// for `format` evidence and opens it, that image's reference value registered as the key's policy.
fn luks_guest(stack: &Stack, kit: &Kit, service: &Service, format: EvidenceFormat) {
    stack.keygen("disk.key").unwrap();
    stack
        .luks_disk(kit, "data", "disk.key", "disk.img")
        .unwrap();
    let tee = match format {
        EvidenceFormat::Snp => "sim",
        EvidenceFormat::Tdx => "sim-tdx",
    };
    stack
        .guest_image(
            kit,
            "guest.img",
            &[
                "--resource",
                "disk",
                "--tee",
                tee,
                "--luks",
                "/dev/vda:data:/mnt/data",
                "--",
                "sha256sum",
                "/mnt/data/payload.bin",
            ],
        )
        .unwrap();
    let policy = stack.measure_linux(kit, "guest.img", format).unwrap();
    if format == EvidenceFormat::Tdx {
        assert!(policy.starts_with("[tdx]\nmrtd = [\""), "{policy}");
    }
    stack
        .register_with_policy(service, "disk", "disk.key", &policy)
        .unwrap();
}

#[test]
fn the_agent_in_the_guest_opens_a_luks2_volume_and_the_workload_reads_it() {
    let Some(kit) = guest_kit("LUKS2 guest") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (stack, service) = started(tmp.path());
    luks_guest(&stack, &kit, &service, EvidenceFormat::Snp);

    // The host's disk image holds none of the data in the clear (the same check finds it in a plain
    // filesystem of the same files, so it would notice).
    let disk = std::fs::read(stack.path("disk.img")).unwrap();
    assert!(!holds_plaintext_of(&disk, &payload()));
    stack.ext4_disk(&kit, "data", "plain.img").unwrap();
    assert!(holds_plaintext_of(
        &std::fs::read(stack.path("plain.img")).unwrap(),
        &payload()
    ));

    let run = boot(&stack, &kit, &service, "guest.img", &["disk.img"]);
    assert_powered_off(&run);
    assert!(run.kernel_version().is_some(), "{}", run.console);
    assert!(
        run.console
            .contains("cvm-agent: /dev/vda opened as /dev/mapper/data, mounted on /mnt/data"),
        "{}",
        run.console
    );
    assert_eq!(
        sha_line(&run, "/mnt/data/payload.bin"),
        Some(sha256_hex(&payload())),
        "{}",
        run.console
    );
    assert!(
        run.console.contains("cvm-guest: exit status 0"),
        "{}",
        run.console
    );
    // The image does not hold the key: it arrived from the service.
    let key = std::fs::read(stack.path("disk.key")).unwrap();
    let image = std::fs::read(stack.path("guest.img")).unwrap();
    assert!(!image.windows(key.len()).any(|w| w == key.as_slice()));
}

#[test]
fn a_tampered_initrd_is_refused_and_the_volume_stays_locked() {
    let Some(kit) = guest_kit("tampered guest") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (stack, service) = started(tmp.path());
    luks_guest(&stack, &kit, &service, EvidenceFormat::Snp);
    let image = std::fs::read(stack.path("guest.img")).unwrap();
    write(&stack, "tampered.img", &tamper_image(&image));

    let run = boot(&stack, &kit, &service, "tampered.img", &["disk.img"]);
    // The guest booted the same way, its agent was refused, and it powered off.
    assert_powered_off(&run);
    assert!(run.kernel_version().is_some(), "{}", run.console);
    assert!(
        run.console.contains("POLICY_MEASUREMENT"),
        "the console shows the agent's refusal:\n{}",
        run.console
    );
    assert!(
        !run.console.contains("opened as /dev/mapper"),
        "{}",
        run.console
    );
    assert_eq!(
        sha_line(&run, "/mnt/data/payload.bin"),
        None,
        "{}",
        run.console
    );
    assert!(
        !run.console.contains("cvm-agent: running"),
        "{}",
        run.console
    );
    assert!(
        !run.console.contains("cvm-guest: exit status 0"),
        "{}",
        run.console
    );
    let audit = stack.audit(&service).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("POLICY_MEASUREMENT") && l.contains("\"disk\"")),
        "{audit}"
    );
}

#[test]
fn the_agent_in_the_guest_unseals_a_file_from_a_virtio_disk() {
    let Some(kit) = guest_kit("sealed-file guest") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (stack, service) = started(tmp.path());
    stack.keygen("data.key").unwrap();
    std::fs::create_dir_all(stack.path("in")).unwrap();
    stack
        .seal("data.key", "data/payload.bin", "in/payload.sealed")
        .unwrap();
    stack.ext4_disk(&kit, "in", "in.img").unwrap();
    stack
        .guest_image(
            &kit,
            "guest.img",
            &[
                "--resource",
                "data",
                "--tee",
                "sim",
                "--mount",
                "/dev/vda:/mnt/in",
                "--unseal",
                "/mnt/in/payload.sealed:/run/payload.bin",
                "--",
                "sha256sum",
                "/run/payload.bin",
            ],
        )
        .unwrap();
    let policy = stack
        .measure_linux(&kit, "guest.img", EvidenceFormat::Snp)
        .unwrap();
    stack
        .register_with_policy(&service, "data", "data.key", &policy)
        .unwrap();
    let run = boot(&stack, &kit, &service, "guest.img", &["in.img,ro"]);
    assert_powered_off(&run);
    assert_eq!(
        sha_line(&run, "/run/payload.bin"),
        Some(sha256_hex(&payload())),
        "{}",
        run.console
    );
}

#[test]
fn tdx_format_evidence_from_inside_the_guest_unlocks_too() {
    let Some(kit) = guest_kit("TDX-format guest") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (stack, service) = started(tmp.path());
    luks_guest(&stack, &kit, &service, EvidenceFormat::Tdx);
    let run = boot(&stack, &kit, &service, "guest.img", &["disk.img"]);
    assert_powered_off(&run);
    assert!(
        run.console
            .contains("tdx-format evidence from the simulated PSP"),
        "{}",
        run.console
    );
    assert_eq!(
        sha_line(&run, "/mnt/data/payload.bin"),
        Some(sha256_hex(&payload())),
        "{}",
        run.console
    );
    let audit = stack.audit(&service).unwrap();
    assert!(audit.contains("\"tdx\""), "{audit}");
}

#[test]
fn an_image_built_twice_is_byte_identical_and_its_printed_reference_is_measures() {
    let Some(kit) = guest_kit("image reproducibility") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let stack = prepared_stack(tmp.path()).unwrap();
    let kernel = kit.kernel.display().to_string();
    let args = |image: &'static str| {
        vec![
            "--resource",
            "disk",
            "--luks",
            "/dev/vda:data",
            "--kernel",
            kernel.as_str(),
            "--append",
            cvm_launch::demo::guest::GUEST_APPEND,
            "--memory",
            "512",
            "--",
            "/bin/true",
            image,
        ]
    };
    let first = stack.guest_image(&kit, "a.img", &args("a")).unwrap();
    let second = stack.guest_image(&kit, "b.img", &args("a")).unwrap();
    let (a, b) = (
        std::fs::read(stack.path("a.img")).unwrap(),
        std::fs::read(stack.path("b.img")).unwrap(),
    );
    assert!(a == b, "two builds of the same inputs differ");
    assert_eq!(first.stdout, second.stdout);
    let printed = String::from_utf8(first.stdout).unwrap();
    let measured = stack
        .measure_linux(&kit, "a.img", EvidenceFormat::Snp)
        .unwrap();
    assert_eq!(printed, measured);
    assert!(first.output.contains(&sha256_hex(&a)), "{}", first.output);
    // Another workload argument: another image, another measurement.
    stack.guest_image(&kit, "c.img", &args("c")).unwrap();
    assert_ne!(std::fs::read(stack.path("c.img")).unwrap(), a);
}
