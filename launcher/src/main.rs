//! The `cvm-launch` binary: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use cvm_launch::demo::stack::EvidenceFormat;
use cvm_launch::image::command::ImageArgs;
use cvm_launch::inputs::SnpInputs;
use cvm_launch::measure::{self, Format};
use cvm_launch::run::RunArgs;
use cvm_launch::run::linux_inputs;

/// cvm-launch: launches confidential VMs and computes their launch measurements offline.
///
/// Supported now: `demo`, `measure --tee snp|tdx`, `probe`, `run --tee sim` (firmware or a Linux
/// kernel); `run --tee snp|tdx` stops with exit 2 on hosts whose KVM lacks those VM types and
/// otherwise launches on them (not yet run on SNP or TDX hardware).
#[derive(Parser)]
#[command(name = "cvm-launch", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Tee {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX (`measure` prints MRTD).
    Tdx,
    /// Plain KVM with a simulated TEE (`run` only).
    Sim,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    /// `[snp] measurements = ["<96 hex>"]`, the appraisal policy fragment.
    Toml,
    /// The digest alone, 96 hex digits.
    Hex,
    /// One JSON object with the digest and the plan's parameters.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole confidential launch in simulated mode, each step a real process: CA, KEK and
    /// simulator; the guest kit (QEMU, busybox, cryptsetup, Debian's cloud kernel; fetched on first
    /// use, packages with apt-get when root); the workload's data on a LUKS2 disk; `cvm-attest serve`
    /// on a free loopback port; the guest image (`image`) and its reference value (`measure`)
    /// registered as the disk key's policy; a Linux guest booted under QEMU in which cvm-agent
    /// attests, opens the disk with dm-crypt and runs the workload (its console lines shown); and
    /// the image with one byte changed, refused with POLICY_MEASUREMENT. Ends with
    /// `demo: OK <time>`. Without QEMU or a kernel the built-in 4 KiB guest runs instead, with the
    /// agent on the host (and without /dev/kvm, its simulated PSP without a VM); it says so. The
    /// other programs are taken from this binary's directory, built with cargo when missing.
    Demo {
        /// Keep the temporary directory (certificates, keys, logs) and print its path.
        #[arg(long)]
        keep: bool,
        /// Evidence format the simulated PSP signs for the agent.
        #[arg(long, value_enum, default_value = "snp")]
        tee: EvidenceFormat,
        /// Do not use /dev/kvm even where it exists (the no-KVM path; a Linux guest runs under TCG).
        #[arg(long)]
        no_kvm: bool,
        /// Which guest: auto (a Linux guest under QEMU where the guest kit can be had, fetching it on
        /// first use, else the built-in one), linux, or builtin (the 4 KiB test guest on /dev/kvm with
        /// the agent on the host).
        #[arg(long, value_enum, default_value = "auto")]
        guest: cvm_launch::demo::GuestChoice,
    },
    /// Print the launch measurement a guest will have (SNP launch digest or TDX MRTD).
    ///
    /// SNP: the digest chains one PAGE_INFO per SNP_LAUNCH_UPDATE page (SEV-SNP ABI §8.17.2): the
    /// firmware mapped to end at 4 GiB, the OVMF SEV metadata sections, one VMSA per vCPU. For
    /// OVMF it equals the `sev-snp-measure` tool's output. TDX: MRTD from the firmware's TDVF
    /// metadata (TDH.MEM.PAGE.ADD / TDH.MR.EXTEND); --vcpus, --cpu-type and the kernel options do
    /// not apply (RTMRs are not computed yet). `--tee sim --kernel K` (no firmware): the SNP digest
    /// of the direct Linux boot that `run --tee sim --kernel K` loads and its simulated PSP signs
    /// (same --initrd, --append, --memory, --cpu-type).
    Measure {
        /// Which TEE's measurement.
        #[arg(long, value_enum)]
        tee: Tee,
        /// Firmware image (OVMF.fd; any flat image with its reset vector at the end); required
        /// except for `--tee sim --kernel`.
        #[arg(long)]
        firmware: Option<PathBuf>,
        /// Number of vCPUs (SNP, required).
        #[arg(long)]
        vcpus: Option<u32>,
        /// Guest CPU type (SNP, required; QEMU name: EPYC-v4, EPYC-Milan, EPYC-Genoa, EPYC-Turin, ...).
        #[arg(long)]
        cpu_type: Option<String>,
        /// Reset state and page order of this VMM: qemu (default), ec2, gce.
        #[arg(long)]
        vmm_type: Option<String>,
        /// SEV_FEATURES of the VMSAs in hex (default 0x1, SNPActive).
        #[arg(long)]
        guest_features: Option<String>,
        /// Kernel for a measured direct boot through OVMF (needs OVMF with SNP kernel hashes).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Initrd (with --kernel).
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Kernel command line (with --kernel).
        #[arg(long)]
        append: Option<String>,
        /// Guest RAM in MiB of a `--tee sim --kernel` boot (as given to `run`; default 512).
        #[arg(long)]
        memory: Option<u32>,
        /// With `--tee sim --kernel`: the evidence format the simulated PSP signs, so which reference
        /// value to print: snp (the SNP digest, `[snp] measurements`) or tdx (the simulated MRTD of the
        /// same pages, `[tdx] mrtd`, for an agent with `--tee sim-tdx`).
        #[arg(long, value_enum, default_value = "snp")]
        evidence: EvidenceFormat,
        /// Output format.
        #[arg(long, value_enum, default_value = "toml")]
        format: OutFormat,
    },
    /// Report what this host supports: KVM API version, VM types (KVM_CAP_VM_TYPES: SNP=4,
    /// TDX=5), guest_memfd, /dev/sev and its firmware version, the kvm_amd/kvm_intel parameters.
    Probe {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Launch a guest. `--tee sim`: plain KVM with a simulated PSP that signs SNP reports with the
    /// SNP digest of the plan that was loaded (the guest reaches it on I/O ports 0x510-0x512, host
    /// processes on --sim-socket); one vCPU; firmware from its reset vector, or a Linux bzImage
    /// booted directly (--kernel/--initrd/--append); COM1 (8250) on stdout (and stdin with
    /// --kernel), a summary on stderr.
    /// `--tee snp|tdx`: checks this host's KVM first and stops with exit 2 when it lacks the VM
    /// type; otherwise launches on a real SNP VM (the same plan as `measure`, --host-data,
    /// --id-block/--id-auth) or TD (TDVF --firmware, --mrconfigid/--mrowner, GetQuote to
    /// --quote-socket), with guest_memfd memory, COM1 polled on stdout, one thread per vCPU.
    /// Exit 0 when the guest halts, reboots or shuts down; 1 when the VM fails; 2 for unusable
    /// arguments or hosts.
    Run(Box<RunArgs>),
    /// Build a guest initramfs reproducibly (the same inputs give the same bytes, so the same
    /// measurement): cvm-agent and its libraries, busybox, cryptsetup for --luks, the kernel modules
    /// from --kernel-modules with their dependencies, the agent's configuration with the service's
    /// CA, --add'ed files and the workload after `--`. Its /init mounts proc/sys/dev, loads the
    /// modules, sets a static address, runs `cvm-agent run` (attest, unlock, exec the workload)
    /// and powers off, printing the exit status. Prints the image's SHA-256; with --kernel, the
    /// reference value (policy TOML) of running it with `run --vmm qemu --tee sim`.
    Image(Box<ImageArgs>),
    /// Find what Linux guests need, or fetch it with --install: QEMU, a static busybox, cryptsetup,
    /// mke2fs, depmod (Debian packages, installed with apt-get when run as root; otherwise the
    /// command to run is printed) and Debian's cloud kernel with its modules (downloaded and
    /// unpacked into --dir, no root needed; CVM_GUEST_KERNEL and CVM_GUEST_MODULES name another).
    /// Prints each part's path; exit 0 when all are there, 1 otherwise.
    GuestKit {
        /// Fetch what is missing.
        #[arg(long)]
        install: bool,
        /// Where the kernel is unpacked [default: target/ci-tools/linux beside this program's build
        /// directory].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Time a Linux guest under QEMU from `run` to the secret released, to its LUKS2 disk unlocked
    /// and to the workload's first output, against the same kernel booting to the same workload
    /// without attestation, in the same run; prints the medians, the phases between them, the ratio
    /// and the images' build times and sizes (use a release build: `cargo run --release --bin
    /// cvm-launch -- bench`).
    Bench {
        /// Boots of each variant (interleaved).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Also print the last round's console lines, each with the time it arrived.
        #[arg(long)]
        timeline: bool,
    },
    /// Relay stdin/stdout to a service on this host's loopback (what QEMU runs for each guest
    /// connection to the forwarded attestation address; not for direct use).
    #[command(hide = true)]
    Relay {
        /// The service, 127.0.0.1:PORT.
        target: std::net::SocketAddr,
    },
}

fn measure_tdx(firmware: &std::path::Path, format: Format) -> ExitCode {
    let image = match std::fs::read(firmware) {
        Ok(i) => i,
        Err(e) => {
            eprintln!(
                "cvm-launch: cannot read firmware {}: {e}",
                firmware.display()
            );
            return ExitCode::from(2);
        }
    };
    match cvm_launch::tdx::mrtd::mrtd_of_firmware(&image) {
        Ok(m) => {
            print!("{}", measure::render_tdx(&m, format));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cvm-launch: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo(
    keep: bool,
    format: EvidenceFormat,
    no_kvm: bool,
    guest: cvm_launch::demo::GuestChoice,
) -> ExitCode {
    let opts = cvm_launch::demo::DemoOptions {
        keep,
        format,
        no_kvm,
        guest,
    };
    match cvm_launch::demo::run(&opts, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvm-launch demo: FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints the SNP digest of `plan` (exit 2 with the reason when there is no plan).
fn print_snp_measurement(
    plan: Result<cvm_launch::plan::LaunchPlan, cvm_launch::inputs::InputError>,
    format: Format,
) -> ExitCode {
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cvm-launch: {e}");
            return ExitCode::from(2);
        }
    };
    for w in plan.warnings() {
        eprintln!("cvm-launch: warning: {w}");
    }
    let digest = measure::snp_digest(&plan);
    print!("{}", measure::render_snp(&plan, &digest, format));
    ExitCode::SUCCESS
}

/// Prints the simulated MRTD of a direct-boot `plan` (exit 2 with the reason when there is no plan).
fn print_sim_mrtd(
    plan: Result<cvm_launch::plan::LaunchPlan, cvm_launch::inputs::InputError>,
    format: Format,
) -> ExitCode {
    let mrtd = plan.map_err(|e| e.to_string()).and_then(|p| {
        cvm_launch::sim_psp::direct_boot_mrtd(&p).ok_or_else(|| {
            "a firmware boot's MRTD comes from its TDVF metadata: use --tee tdx".into()
        })
    });
    match mrtd {
        Ok(m) => {
            print!("{}", measure::render_tdx(&m, format));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cvm-launch: {e}");
            ExitCode::from(2)
        }
    }
}

fn guest_kit(install: bool, dir: Option<PathBuf>) -> ExitCode {
    let dir = match dir {
        Some(d) => d,
        None => match cvm_launch::demo::programs::Programs::dir_of_current_exe() {
            Ok(b) => cvm_launch::kit::default_dir(&b),
            Err(e) => {
                eprintln!("cvm-launch: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let found = if install {
        cvm_launch::kit::install(&dir, &mut |m| eprintln!("cvm-launch guest-kit: {m}"))
    } else {
        cvm_launch::kit::find(&dir)
            .map_err(|m| format!("missing {m}; `cvm-launch guest-kit --install` fetches it"))
    };
    match found {
        Ok(kit) => {
            for (what, path) in [
                ("qemu", &kit.qemu),
                ("busybox", &kit.busybox),
                ("cryptsetup", &kit.cryptsetup),
                ("mke2fs", &kit.mke2fs),
                ("kernel", &kit.kernel),
                ("modules", &kit.modules),
            ] {
                println!("{what:<11}{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cvm-launch guest-kit: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo {
            keep,
            tee,
            no_kvm,
            guest,
        } => demo(keep, tee, no_kvm, guest),
        Command::Measure {
            tee,
            firmware,
            vcpus,
            cpu_type,
            vmm_type,
            guest_features,
            kernel,
            initrd,
            append,
            memory,
            evidence,
            format,
        } => {
            let format = match format {
                OutFormat::Toml => Format::Toml,
                OutFormat::Hex => Format::Hex,
                OutFormat::Json => Format::Json,
            };
            match tee {
                Tee::Snp => {}
                Tee::Tdx => {
                    let snp_only = [
                        vcpus.is_some(),
                        cpu_type.is_some(),
                        vmm_type.is_some(),
                        guest_features.is_some(),
                        kernel.is_some(),
                        initrd.is_some(),
                        append.is_some(),
                    ];
                    if snp_only.contains(&true) {
                        eprintln!(
                            "cvm-launch: measure --tee tdx takes only --firmware and --format (MRTD does not depend on vCPUs, CPU type or kernel; RTMRs are not computed yet)"
                        );
                        return ExitCode::from(2);
                    }
                    let Some(firmware) = firmware else {
                        eprintln!("cvm-launch: measure --tee tdx needs --firmware TDVF.fd");
                        return ExitCode::from(2);
                    };
                    return measure_tdx(&firmware, format);
                }
                Tee::Sim => {
                    if let (None, Some(kernel)) = (&firmware, &kernel) {
                        let inputs = linux_inputs(
                            kernel.clone(),
                            initrd,
                            append,
                            memory,
                            cpu_type,
                            vmm_type,
                            guest_features,
                        );
                        return match evidence {
                            EvidenceFormat::Snp => print_snp_measurement(inputs.plan(), format),
                            EvidenceFormat::Tdx => print_sim_mrtd(inputs.plan(), format),
                        };
                    }
                }
            }
            if evidence != EvidenceFormat::Snp {
                eprintln!(
                    "cvm-launch: --evidence tdx applies to `measure --tee sim --kernel` (for TDX use --tee tdx --firmware)"
                );
                return ExitCode::from(2);
            }
            if memory.is_some() {
                eprintln!(
                    "cvm-launch: --memory only applies to `measure --tee sim --kernel` (a direct boot without firmware)"
                );
                return ExitCode::from(2);
            }
            let Some(firmware) = firmware else {
                eprintln!(
                    "cvm-launch: measure needs --firmware (or, for a direct boot on the sim backend, --tee sim --kernel K)"
                );
                return ExitCode::from(2);
            };
            let (Some(vcpus), Some(cpu_type)) = (vcpus, cpu_type) else {
                eprintln!("cvm-launch: measure --tee snp needs --vcpus N and --cpu-type TYPE");
                return ExitCode::from(2);
            };
            let inputs = SnpInputs {
                firmware,
                vcpus,
                cpu_type,
                vmm_type,
                guest_features,
                kernel,
                initrd,
                append,
            };
            print_snp_measurement(inputs.plan(), format)
        }
        Command::Probe { json } => {
            let report = cvm_launch::probe::probe();
            if json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("cvm-launch: cannot encode the probe report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.to_text());
            }
            ExitCode::SUCCESS
        }
        Command::Run(args) => cvm_launch::run::command(*args),
        Command::Image(args) => cvm_launch::image::command::command(&args),
        Command::GuestKit { install, dir } => guest_kit(install, dir),
        Command::Bench { rounds, timeline } => {
            match cvm_launch::bench::run(rounds.max(1), timeline, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cvm-launch bench: {e}");
                    ExitCode::from(1)
                }
            }
        }
        // QEMU gives the relay the guest's connection as stdin, stdout and stderr: it says nothing (a
        // message would reach the guest as bytes of its TLS stream); a failure just closes the connection.
        Command::Relay { target } => match cvm_launch::qemu::relay::relay(target) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        },
    }
}
