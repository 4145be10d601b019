//! `cvm-launch bench`: what attestation and unlocking cost a Linux guest's boot, measured against the same
//! kernel booting to the same workload without them, in the same run (rounds interleaved, so both see
//! the same machine). Prints the medians of the time from `cvm-launch run` to each milestone the consoles
//! show (`/init` runs, the agent starts, the secret is released, the disk is unlocked, the workload's first
//! output), the phases between them, the ratio of the two boot-to-workload times, and the two images' build
//! times and sizes. Timings are printed, never asserted.
//!
//! The attested guest: the agent attests through the forwarded port, opens a LUKS2 volume with dm-crypt,
//! mounts it and runs `sha256sum` of a 4 MiB file on it. The baseline: an image without agent or
//! cryptsetup, the same file on a plain ext4 disk mounted by the init, the same `sha256sum`. Both load the
//! virtio modules and configure the network.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::demo::guest::GuestRun;
use crate::demo::programs::Programs;
use crate::demo::stack::{EvidenceFormat, Stack, StackError};
use crate::demo::{DEMO_SEED, sample_workload};
use crate::kit::Kit;

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The programs.
    #[error(transparent)]
    Programs(#[from] crate::demo::programs::ProgramsError),
    /// The guest kit.
    #[error("no Linux guest here: {0}")]
    Kit(String),
    /// A step.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// A run that did not end as it should.
    #[error("{0}")]
    Run(String),
}

/// One boot's times from `cvm-launch run` to each milestone its console shows.
#[derive(Clone, Copy, Debug, Default)]
struct Times {
    /// `/init` runs (it prints the kernel's version first): the kernel booted, the initramfs unpacked.
    init: Option<Duration>,
    /// The init starts the agent (modules loaded, network up).
    agent: Option<Duration>,
    /// The agent says the secret was released.
    released: Option<Duration>,
    /// The agent says the volume is open (and mounted).
    unlocked: Option<Duration>,
    /// The workload's first output.
    workload: Duration,
}

/// The console line that the workload (`sha256sum`) prints.
fn is_workload_output(line: &str) -> bool {
    line.ends_with("/mnt/data/workload.txt") && line.len() > 64
}

fn times(run: &GuestRun) -> Result<Times, BenchError> {
    let workload = run.time_of(is_workload_output).ok_or_else(|| {
        BenchError::Run(format!(
            "the workload printed nothing; {}\nconsole:\n{}",
            run.launcher.output, run.console
        ))
    })?;
    let version_line = format!("{}Linux version", crate::image::init::PREFIX);
    Ok(Times {
        init: run.time_of(|l| l.starts_with(&version_line)),
        agent: run.time_of(|l| l.starts_with(crate::image::init::AGENT_STARTS)),
        released: run.time_of(|l| l.starts_with("cvm-agent: attested; secret")),
        unlocked: run.time_of(|l| l.contains("opened as /dev/mapper/")),
        workload,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Prints a run's console lines with the time each arrived.
fn print_timeline(out: &mut dyn Write, name: &str, run: &GuestRun) {
    let _ = writeln!(out, "timeline of the last {name} boot:");
    for (t, line) in &run.timeline {
        let _ = writeln!(out, "  {:>8.3}  {line}", t.as_secs_f64());
    }
}

/// Runs the benchmark with `rounds` boots of each variant, printing to `out` (with `timeline`, also the
/// last round's console lines with their times).
pub fn run(rounds: u32, timeline: bool, out: &mut dyn Write) -> Result<(), BenchError> {
    let bin_dir = Programs::dir_of_current_exe()?;
    let programs = Programs::find(&bin_dir, &mut |m| {
        let _ = writeln!(out, "cvm-launch bench: {m}");
    })?
    .programs;
    let kit = crate::kit::install(&crate::kit::default_dir(&bin_dir), &mut |m| {
        let _ = writeln!(out, "cvm-launch bench: {m}");
    })
    .map_err(BenchError::Kit)?;
    let dir = tempfile::Builder::new()
        .prefix("cvm-bench-")
        .tempdir()
        .map_err(|e| BenchError::Run(format!("temporary directory: {e}")))?;
    let stack = Stack::new(programs, dir.path());
    stack.create_pki()?;
    stack.keygen("kek")?;
    stack.create_sim(Some(DEMO_SEED))?;
    let service = stack.start_service()?;
    let (attested_build, baseline_build) = prepare(&stack, &kit, &service)?;
    let size = |f: &str| {
        std::fs::metadata(stack.path(f))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let _ = writeln!(
        out,
        "cvm-launch bench: Linux guest under QEMU, kernel {}, {rounds} rounds of each variant, interleaved",
        kit.kernel.display()
    );
    let _ = writeln!(
        out,
        "image build: attested {} bytes in {}; baseline {} bytes in {}",
        size("attested.img"),
        secs(attested_build),
        size("baseline.img"),
        secs(baseline_build)
    );
    let (mut attested, mut baseline) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let a = stack.boot_linux(
            &kit,
            &service,
            "attested.img",
            &["disk.img"],
            "attested.console",
            &[],
        )?;
        let b = stack.boot_linux(
            &kit,
            &service,
            "baseline.img",
            &["plain.img,ro"],
            "baseline.console",
            &[],
        )?;
        let (ta, tb) = (times(&a)?, times(&b)?);
        let _ = writeln!(
            out,
            "  round {}: attested workload at {}, baseline at {}",
            round + 1,
            secs(ta.workload),
            secs(tb.workload)
        );
        attested.push(ta);
        baseline.push(tb);
        if timeline && round + 1 == rounds {
            print_timeline(out, "attested", &a);
            print_timeline(out, "baseline", &b);
        }
    }
    print_medians(out, &attested, &baseline);
    service.stop();
    Ok(())
}

/// The median of one milestone over the rounds, if every round reached it.
fn col(v: &[Times], f: fn(&Times) -> Option<Duration>) -> Option<Duration> {
    v.iter().map(f).collect::<Option<Vec<_>>>().map(median)
}

/// Prints the medians of each milestone, the attested boot's phases (each the difference of two medians)
/// and the ratio of the two boot-to-workload times.
fn print_medians(out: &mut dyn Write, attested: &[Times], baseline: &[Times]) {
    let rows: [(&str, Option<Duration>, Option<Duration>); 5] = [
        (
            "run → /init runs",
            col(attested, |t| t.init),
            col(baseline, |t| t.init),
        ),
        ("run → agent starts", col(attested, |t| t.agent), None),
        ("run → secret released", col(attested, |t| t.released), None),
        ("run → disk unlocked", col(attested, |t| t.unlocked), None),
        (
            "run → workload's first output",
            col(attested, |t| Some(t.workload)),
            col(baseline, |t| Some(t.workload)),
        ),
    ];
    let show = |d: Option<Duration>| d.map(secs).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "{:<44}{:>12}{:>12}",
        "median of the rounds", "attested", "baseline"
    );
    for (name, a, b) in rows {
        let _ = writeln!(out, "  {name:<42}{:>12}{:>12}", show(a), show(b));
    }
    let _ = writeln!(
        out,
        "where the attested boot's time goes (differences of medians):"
    );
    let phases = rows.windows(2).map(|w| {
        let name = format!(
            "{} → {}",
            w[0].0.trim_start_matches("run → "),
            w[1].0.trim_start_matches("run → ")
        );
        (name, w[1].1.zip(w[0].1).map(|(b, a)| b.saturating_sub(a)))
    });
    let before = rows[0]
        .1
        .zip(rows[0].2)
        .map(|(a, b)| a.as_secs_f64() - b.as_secs_f64());
    let _ = writeln!(
        out,
        "  {:<42}{:>12}",
        "run → /init runs, more than the baseline",
        before
            .map(|d| format!("{d:.3} s"))
            .unwrap_or_else(|| "-".into())
    );
    for (name, d) in phases {
        let _ = writeln!(out, "  {name:<42}{:>12}", show(d));
    }
    let baseline_init = rows[4].2.zip(rows[0].2).map(|(w, i)| w.saturating_sub(i));
    let _ = writeln!(
        out,
        "  {:<42}{:>12}",
        "baseline: /init runs → workload",
        show(baseline_init)
    );
    let a = median(attested.iter().map(|t| t.workload).collect());
    let b = median(baseline.iter().map(|t| t.workload).collect());
    let _ = writeln!(
        out,
        "  attested / baseline boot-to-workload      {:>8.3}×  (attestation and unlock add {:.1} %; target ≤ 15 %)",
        a.as_secs_f64() / b.as_secs_f64().max(1e-9),
        (a.as_secs_f64() / b.as_secs_f64().max(1e-9) - 1.0) * 100.0
    );
}

/// The data, the disks, both images and the policy; returns the images' build times.
fn prepare(
    stack: &Stack,
    kit: &Kit,
    service: &crate::demo::stack::Service,
) -> Result<(Duration, Duration), BenchError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| StackError::Io { what, source }
    };
    std::fs::create_dir_all(stack.path("data")).map_err(io("create data/"))?;
    std::fs::write(stack.path("data/workload.txt"), sample_workload())
        .map_err(io("write data/workload.txt"))?;
    stack.keygen("disk.key")?;
    stack.luks_disk(kit, "data", "disk.key", "disk.img")?;
    stack.ext4_disk(kit, "data", "plain.img")?;
    let t = Instant::now();
    stack.guest_image(
        kit,
        "attested.img",
        &[
            "--resource",
            "disk",
            "--tee",
            "sim",
            "--luks",
            "/dev/vda:data:/mnt/data",
            "--",
            "sha256sum",
            "/mnt/data/workload.txt",
        ],
    )?;
    let attested = t.elapsed();
    let t = Instant::now();
    stack.guest_image(
        kit,
        "baseline.img",
        &[
            "--no-agent",
            "--mount",
            "/dev/vda:/mnt/data",
            "--",
            "sha256sum",
            "/mnt/data/workload.txt",
        ],
    )?;
    let baseline = t.elapsed();
    let policy = stack.measure_linux(kit, "attested.img", EvidenceFormat::Snp)?;
    stack.register_with_policy(service, "disk", "disk.key", &policy)?;
    Ok((attested, baseline))
}
