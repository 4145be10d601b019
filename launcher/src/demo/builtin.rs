//! The demo with the built-in guest (`launcher/guest/sim-guest.bin`, 4 KiB of assembly): when no Linux
//! guest can run here, or with `--guest builtin`.
//!
//! 2. a workload file sealed with a workload key;
//! 3. `cvm-attest serve` in simulated mode on a free loopback port;
//! 4. the guest's reference value from its launch plan (`cvm-launch measure`);
//! 5. the workload key registered with that policy (`cvm-attest admin secret put`);
//! 6. the test guest launched on `/dev/kvm` (`cvm-launch run --tee sim`) with its PSP socket;
//! 7. `cvm-agent unlock` on the host for that guest: the unsealed bytes must equal the original;
//! 8. the same with a guest image one byte different: refused with `POLICY_MEASUREMENT`.
//!
//! Without `/dev/kvm` step 6 serves the launch plan's simulated PSP from this process instead (no guest
//! code runs) and says so.

use super::service_step;
use super::stack::{Guest, Stack, StackError};
use super::{
    DemoError, DemoOptions, Ending, Steps, TAMPERED_OFFSET, TEST_GUEST, sample_workload, tampered,
};

/// Runs steps 2 to 8 with the built-in guest.
pub(super) fn run(
    stack: &Stack,
    opts: &DemoOptions,
    steps: &mut Steps,
) -> Result<Ending, DemoError> {
    let kvm = if opts.no_kvm {
        Err("--no-kvm given".to_owned())
    } else {
        crate::probe::kvm_usable()
    };
    if let Err(why) = &kvm {
        steps.note(&format!(
            "no KVM ({why}): the simulated PSP runs without a VM; the guest's measurement still comes \
             from its launch plan, but no guest code runs"
        ));
    }
    flow(stack, opts, kvm.is_ok(), steps)?;
    Ok(if kvm.is_ok() {
        Ending::Vm
    } else {
        Ending::NoKvm
    })
}

/// Steps 2 to 8 with the built-in guest. Processes stop when their guards drop, in reverse order of
/// starting.
fn flow(stack: &Stack, opts: &DemoOptions, kvm: bool, steps: &mut Steps) -> Result<(), DemoError> {
    let format = opts.format;
    let workload = sample_workload();
    steps.run(
        "sample workload sealed with a workload key (cvm-keys seal)",
        || {
            std::fs::write(stack.path("workload.txt"), &workload).map_err(|source| {
                StackError::Io {
                    what: "write workload.txt".into(),
                    source,
                }
            })?;
            stack.keygen("workload.key")?;
            stack.seal("workload.key", "workload.txt", "workload.sealed")?;
            Ok(((), format!("workload.sealed ({} bytes)", workload.len())))
        },
    )?;
    let service = service_step(stack, steps)?;
    for (name, bytes) in [
        ("guest.bin", TEST_GUEST.to_vec()),
        ("tampered.bin", tampered()),
    ] {
        std::fs::write(stack.path(name), bytes).map_err(|source| DemoError::Step {
            step: "write the guest images",
            source: Box::new(StackError::Io {
                what: format!("write {name}"),
                source,
            }),
        })?;
    }
    let policy = steps.run(
        "reference value from the launch plan (cvm-launch measure)",
        || {
            let p = stack.measure("guest.bin", format)?;
            let value = p.lines().last().unwrap_or_default().trim().to_owned();
            Ok((p, value))
        },
    )?;
    steps.run(
        "workload key registered with that policy (cvm-attest admin)",
        || {
            std::fs::write(stack.path("policy.toml"), &policy).map_err(|source| {
                StackError::Io {
                    what: "write policy.toml".into(),
                    source,
                }
            })?;
            stack.register(&service, "workload", "workload.key", "policy.toml")?;
            Ok(((), "secret \"workload\"".into()))
        },
    )?;
    let launch = |image: &str, socket: &str| {
        if kvm {
            stack.launch(image, socket)
        } else {
            stack.launch_without_vm(image, socket)
        }
    };
    let guest = steps.run("guest launched (cvm-launch run --tee sim)", || {
        let g = launch("guest.bin", "psp.sock")?;
        let detail = match &g {
            Guest::Vm { report, .. } => format!(
                "the guest asked its PSP for a report and printed it ({} bytes) on COM1",
                report.len()
            ),
            Guest::NoVm(_) => "no VM: the launch plan's simulated PSP serves psp.sock".into(),
        };
        Ok((g, detail))
    })?;
    let agent = steps.run("agent attests and unlocks (cvm-agent unlock)", || {
        let done = stack.unlock(
            &service,
            "workload",
            "psp.sock",
            format,
            "workload.sealed",
            "workload.out",
        )?;
        Ok((done, String::new()))
    })?;
    if !agent.status.success() {
        return Err(DemoError::Check {
            step: "agent attests and unlocks",
            message: format!("cvm-agent failed ({}):\n{}", agent.status, agent.output),
        });
    }
    let unlocked = std::fs::read(stack.path("workload.out")).unwrap_or_default();
    if unlocked != workload {
        return Err(DemoError::Check {
            step: "agent attests and unlocks",
            message: "the unlocked bytes differ from the original workload".into(),
        });
    }
    steps.note(&format!(
        "unlocked workload.out equals the original ({} bytes)",
        unlocked.len()
    ));
    drop(guest);
    let tampered_guest = steps.run("tampered guest launched (one byte changed)", || {
        let g = launch("tampered.bin", "tampered.sock")?;
        Ok((
            g,
            format!("tampered.bin differs at offset {TAMPERED_OFFSET:#x}"),
        ))
    })?;
    let refused = steps.run("agent in the tampered guest", || {
        let done = stack.unlock(
            &service,
            "workload",
            "tampered.sock",
            format,
            "workload.sealed",
            "tampered.out",
        )?;
        Ok((done, String::new()))
    })?;
    drop(tampered_guest);
    let refused_ok = !refused.status.success()
        && refused.output.contains("POLICY_MEASUREMENT")
        && !stack.path("tampered.out").exists();
    if !refused_ok {
        return Err(DemoError::Check {
            step: "agent in the tampered guest",
            message: format!(
                "expected a POLICY_MEASUREMENT refusal and no output file; the agent said ({}):\n{}",
                refused.status, refused.output
            ),
        });
    }
    if let Some(line) = refused
        .output
        .lines()
        .find(|l| l.contains("POLICY_MEASUREMENT"))
    {
        steps.note(line.trim_start_matches("cvm-agent: error: "));
    }
    steps.note("refused with POLICY_MEASUREMENT, as expected: no secret, no output file");
    service.stop();
    Ok(())
}
