//! The demo with a real Linux guest under QEMU (steps 3 to 8 of the module above): the workload's data on
//! a LUKS2 disk, the service, the guest image and its reference value, the key registered, the guest
//! booted (its console's lines shown: the kernel's version, the agent's result, the workload's output),
//! then the tampered image refused.

use super::guest::{GuestRun, tamper_image};
use super::stack::{Stack, StackError};
use super::{DemoError, DemoOptions, Steps, sample_workload, service_step};
use crate::kit::Kit;

/// Where the workload's data is, in the guest.
const GUEST_DATA: &str = "/mnt/data/workload.txt";
/// The secret's name.
const RESOURCE: &str = "disk";

fn io(what: &str) -> impl FnOnce(std::io::Error) -> StackError + '_ {
    move |source| StackError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The SHA-256 the workload printed for [`GUEST_DATA`] (`sha256sum`'s line), if it did.
fn workload_sha(run: &GuestRun) -> Option<&str> {
    run.console.lines().find_map(|l| {
        l.strip_suffix(GUEST_DATA)
            .map(str::trim_end)
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// The agent's lines on the console.
fn agent_lines(run: &GuestRun) -> Vec<&str> {
    run.console
        .lines()
        .filter(|l| l.starts_with("cvm-agent: "))
        .collect()
}

/// Steps 3 to 8 with a Linux guest.
pub(super) fn flow(
    stack: &Stack,
    kit: &Kit,
    opts: &DemoOptions,
    steps: &mut Steps,
) -> Result<(), DemoError> {
    let format = opts.format;
    let workload = sample_workload();
    let expected = hex::encode(ring::digest::digest(&ring::digest::SHA256, &workload));
    steps.run(
        "workload data on a LUKS2 disk (mke2fs, cryptsetup reencrypt --encrypt)",
        || {
            std::fs::create_dir_all(stack.path("data")).map_err(io("create data/"))?;
            std::fs::write(stack.path("data/workload.txt"), &workload)
                .map_err(io("write data/workload.txt"))?;
            stack.keygen("disk.key")?;
            stack.luks_disk(kit, "data", "disk.key", "disk.img")?;
            Ok((
                (),
                format!(
                    "disk.img: workload.txt ({} bytes, sha256 {}…) under disk.key",
                    workload.len(),
                    &expected[..16]
                ),
            ))
        },
    )?;
    let service = service_step(stack, steps)?;
    let tee = match format {
        super::stack::EvidenceFormat::Snp => "sim",
        super::stack::EvidenceFormat::Tdx => "sim-tdx",
    };
    steps.run("guest image (cvm-launch image)", || {
        let done = stack.guest_image(
            kit,
            "guest.img",
            &[
                "--resource",
                RESOURCE,
                "--tee",
                tee,
                "--luks",
                "/dev/vda:data:/mnt/data",
                "--",
                "sha256sum",
                GUEST_DATA,
            ],
        )?;
        let line = done
            .output
            .lines()
            .find_map(|l| l.strip_prefix("cvm-launch image: wrote "))
            .unwrap_or_default()
            .to_owned();
        Ok(((), line))
    })?;
    let policy = steps.run(
        "reference value (cvm-launch measure --tee sim --kernel)",
        || {
            let p = stack.measure_linux(kit, "guest.img", format)?;
            let value = p.lines().last().unwrap_or_default().trim().to_owned();
            Ok((p, value))
        },
    )?;
    steps.run(
        "disk key registered with that policy (cvm-attest admin)",
        || {
            stack.register_with_policy(&service, RESOURCE, "disk.key", &policy)?;
            Ok(((), format!("secret {RESOURCE:?}")))
        },
    )?;
    let accel: &[&str] = if opts.no_kvm {
        &["--accel", "tcg"]
    } else {
        &[]
    };
    let run = steps.run(
        "Linux guest booted (cvm-launch run --vmm qemu --tee sim)",
        || {
            let run = stack.boot_linux(
                kit,
                &service,
                "guest.img",
                &["disk.img"],
                "guest.console",
                accel,
            )?;
            let ended = run
                .launcher
                .output
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("cvm-launch: "))
                .unwrap_or_default()
                .to_owned();
            Ok((run, ended))
        },
    )?;
    let check = |message: String| DemoError::Check {
        step: "Linux guest booted",
        message,
    };
    let Some(version) = run.kernel_version() else {
        return Err(check(format!(
            "no kernel version on the console:\n{}",
            run.console
        )));
    };
    steps.note(&format!("guest kernel: {version}"));
    for line in agent_lines(&run) {
        steps.note(&format!("in the guest: {line}"));
    }
    match workload_sha(&run) {
        Some(sha) if sha == expected => steps.note(&format!(
            "in the guest: the workload printed sha256 {sha} of {GUEST_DATA}, equal to the original's"
        )),
        other => {
            return Err(check(format!(
                "the workload printed {other:?}, expected {expected}; console:\n{}",
                run.console
            )));
        }
    }
    if !run.launcher.status.success() {
        return Err(check(format!("cvm-launch run: {}", run.launcher.output)));
    }
    let tampered = steps.run(
        "tampered guest booted (one byte of guest.img changed)",
        || {
            let image = std::fs::read(stack.path("guest.img")).map_err(io("read guest.img"))?;
            std::fs::write(stack.path("tampered.img"), tamper_image(&image))
                .map_err(io("write tampered.img"))?;
            let run = stack.boot_linux(
                kit,
                &service,
                "tampered.img",
                &["disk.img"],
                "tampered.console",
                accel,
            )?;
            Ok((
                run,
                "tampered.img differs at byte 4 (the gzip header's time)".into(),
            ))
        },
    )?;
    let refusal = agent_lines(&tampered)
        .into_iter()
        .find(|l| l.contains("POLICY_MEASUREMENT"))
        .map(str::to_owned);
    let locked = !tampered.console.contains("opened as /dev/mapper")
        && workload_sha(&tampered).is_none()
        && tampered.launcher.status.success();
    match refusal {
        Some(line) if locked => {
            steps.note(&format!("in the guest: {line}"));
            steps.note(
                "refused with POLICY_MEASUREMENT, as expected: the disk stayed locked, the workload never ran",
            );
        }
        _ => {
            return Err(DemoError::Check {
                step: "tampered guest booted",
                message: format!(
                    "expected a POLICY_MEASUREMENT refusal, the disk locked and the guest powered off; console:\n{}",
                    tampered.console
                ),
            });
        }
    }
    service.stop();
    Ok(())
}
