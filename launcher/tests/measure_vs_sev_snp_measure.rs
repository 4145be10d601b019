//! Differential test: `cvm-launch measure --tee snp` against the independent `sev-snp-measure` tool.
//!
//! Inputs: `sev-snp-measure` on PATH (or `SEV_SNP_MEASURE=/path`), and `CVM_OVMF_DIR`, a directory
//! searched for OVMF images (`*.fd`, variable stores excluded); `.ci/run` installs both. Without the
//! tool the test prints why it skipped; without OVMF it still runs the synthetic-image matrix.
//!
//! Matrix: every OVMF image × vCPUs {1, 2, 4, 64} × CPU types {EPYC-v4, EPYC-Milan, EPYC-Genoa},
//! plus EC2/GCE and guest-feature variants; synthetic images with an SNP_KERNEL_HASHES section ×
//! the same vCPUs and CPU types × {no kernel, kernel, kernel+initrd, kernel+initrd+append}. Where
//! the tool refuses (a kernel with an OVMF that cannot measure one), we must refuse too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cvm_launch::inputs::SnpInputs;
use cvm_launch::measure::snp_digest;
use cvm_launch::synthetic::TestImage;
use std::io::Write as _;

const VCPUS: [u32; 4] = [1, 2, 4, 64];
const CPUS: [&str; 3] = ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"];

/// The tool's command line prefix: `$SEV_SNP_MEASURE`, `sev-snp-measure` on PATH, or the module run
/// by `python3` (a fresh `pip install` may not have put the script on PATH yet).
fn tool() -> Option<Vec<String>> {
    if let Ok(p) = std::env::var("SEV_SNP_MEASURE") {
        return Some(vec![p]);
    }
    let candidates = [
        vec!["sev-snp-measure".to_owned()],
        vec![
            "python3".to_owned(),
            "-m".to_owned(),
            "sevsnpmeasure.cli".to_owned(),
        ],
    ];
    candidates.into_iter().find(|c| {
        Command::new(&c[0])
            .args(&c[1..])
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

fn ovmf_images(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        if p.is_dir() {
            ovmf_images(&p, out);
        } else if name.ends_with(".fd") && !name.contains("VARS") {
            // Debian ships symbolic links to the same builds under several names.
            if let Ok(real) = p.canonicalize()
                && !out.contains(&real)
            {
                out.push(real);
            }
        }
    }
}

/// One combination of the matrix.
#[derive(Clone, Debug)]
struct Case {
    firmware: PathBuf,
    vcpus: u32,
    cpu: &'static str,
    vmm: Option<&'static str>,
    features: Option<&'static str>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<&'static str>,
}

impl Case {
    fn new(firmware: &Path, vcpus: u32, cpu: &'static str) -> Self {
        Self {
            firmware: firmware.to_owned(),
            vcpus,
            cpu,
            vmm: None,
            features: None,
            kernel: None,
            initrd: None,
            append: None,
        }
    }

    /// The tool's answer: Ok(hex) or Err(its stderr).
    fn theirs(&self, tool: &[String]) -> Result<String, String> {
        let mut c = Command::new(&tool[0]);
        c.args(&tool[1..]);
        c.args(["--mode", "snp", "--vcpus", &self.vcpus.to_string()]);
        c.args(["--vcpu-type", self.cpu, "--ovmf"])
            .arg(&self.firmware);
        if let Some(v) = self.vmm {
            c.args(["--vmm-type", if v == "qemu" { "QEMU" } else { v }]);
        }
        if let Some(f) = self.features {
            c.args(["--guest-features", f]);
        }
        if let Some(k) = &self.kernel {
            c.arg("--kernel").arg(k);
        }
        if let Some(i) = &self.initrd {
            c.arg("--initrd").arg(i);
        }
        if let Some(a) = self.append {
            c.args(["--append", a]);
        }
        let out = c.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn ours(&self) -> Result<String, String> {
        let inputs = SnpInputs {
            firmware: self.firmware.clone(),
            vcpus: self.vcpus,
            cpu_type: self.cpu.to_owned(),
            vmm_type: self.vmm.map(str::to_owned),
            guest_features: self.features.map(str::to_owned),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            append: self.append.map(str::to_owned),
        };
        let plan = inputs.plan().map_err(|e| e.to_string())?;
        Ok(hex::encode(snp_digest(&plan)))
    }
}

/// A digest in hex, or why it was refused.
type Answer = Result<String, String>;

#[derive(Default)]
struct Tally {
    equal: usize,
    both_refused: usize,
    failures: Vec<String>,
}

fn run_cases(tool: &[String], cases: &[Case]) -> Tally {
    // Two workers: the tool is a Python process per case.
    let results: Vec<(Case, Answer, Answer)> = std::thread::scope(|s| {
        let halves = cases.split_at(cases.len() / 2);
        let work = |part: &[Case]| {
            part.iter()
                .map(|c| (c.clone(), c.theirs(tool), c.ours()))
                .collect::<Vec<_>>()
        };
        let a = s.spawn(move || work(halves.0));
        let mut b = work(halves.1);
        let mut all = a.join().unwrap();
        all.append(&mut b);
        all
    });
    let mut t = Tally::default();
    for (case, theirs, ours) in results {
        match (&theirs, &ours) {
            (Ok(a), Ok(b)) if a == b => t.equal += 1,
            (Err(_), Err(_)) => t.both_refused += 1,
            _ => t.failures.push(format!(
                "{case:?}\n  sev-snp-measure: {theirs:?}\n  cvm-launch:      {ours:?}"
            )),
        }
    }
    t
}

#[test]
fn snp_digest_equals_sev_snp_measure_over_the_matrix() {
    let Some(tool) = tool() else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: sev-snp-measure not found (pip install sev-snp-measure, or set SEV_SNP_MEASURE)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("vmlinuz");
    std::fs::write(
        &kernel,
        b"not really a kernel, but hashed like one".repeat(100),
    )
    .unwrap();
    let initrd = tmp.path().join("initrd.img");
    std::fs::write(&initrd, vec![0x5a; 12345]).unwrap();

    let mut cases = Vec::new();
    let mut images = Vec::new();
    match std::env::var_os("CVM_OVMF_DIR") {
        Some(dir) => {
            ovmf_images(Path::new(&dir), &mut images);
            for i in &images {
                println!("OVMF image: {}", i.display());
            }
        }
        None => drop(writeln!(
            std::io::stderr(),
            "note: CVM_OVMF_DIR unset: real OVMF images skipped (`.ci/run` downloads Debian's ovmf)"
        )),
    }
    for img in &images {
        for v in VCPUS {
            for cpu in CPUS {
                cases.push(Case::new(img, v, cpu));
            }
        }
        for vmm in ["ec2", "gce"] {
            cases.push(Case {
                vmm: Some(vmm),
                ..Case::new(img, 4, "EPYC-Milan")
            });
        }
        cases.push(Case {
            features: Some("0x21"),
            ..Case::new(img, 2, "EPYC-Genoa")
        });
        // Debian's OVMF has no SNP_KERNEL_HASHES section: both must refuse a kernel.
        cases.push(Case {
            kernel: Some(kernel.clone()),
            ..Case::new(img, 1, "EPYC-v4")
        });
    }

    for (seed, size) in [(1u8, 64 * 1024), (2, 256 * 1024)] {
        let path = tmp.path().join(format!("synthetic-{seed}.fd"));
        std::fs::write(
            &path,
            TestImage {
                size,
                seed,
                ..TestImage::default()
            }
            .build(),
        )
        .unwrap();
        for v in VCPUS {
            for cpu in CPUS {
                let base = Case::new(&path, v, cpu);
                cases.push(base.clone());
                cases.push(Case {
                    kernel: Some(kernel.clone()),
                    ..base.clone()
                });
                cases.push(Case {
                    kernel: Some(kernel.clone()),
                    initrd: Some(initrd.clone()),
                    ..base.clone()
                });
                cases.push(Case {
                    kernel: Some(kernel.clone()),
                    initrd: Some(initrd.clone()),
                    append: Some("console=ttyS0 root=/dev/vda1 quiet"),
                    ..base
                });
            }
        }
        for vmm in ["ec2", "gce"] {
            cases.push(Case {
                vmm: Some(vmm),
                kernel: Some(kernel.clone()),
                append: Some("console=ttyS0"),
                ..Case::new(&path, 4, "EPYC-Genoa")
            });
        }
    }

    let t = run_cases(&tool, &cases);
    let _ = writeln!(
        std::io::stderr(),
        "sev-snp-measure matrix: {} combinations ({} OVMF images, 2 synthetic): {} equal, {} refused by both, {} differ",
        cases.len(),
        images.len(),
        t.equal,
        t.both_refused,
        t.failures.len()
    );
    assert!(
        t.failures.is_empty(),
        "differences:\n{}",
        t.failures.join("\n")
    );
    assert!(t.equal > 0);
}

#[test]
fn cli_prints_the_policy_fragment_and_hex() {
    let tmp = tempfile::tempdir().unwrap();
    let fw = tmp.path().join("fw.fd");
    std::fs::write(&fw, TestImage::default().build()).unwrap();
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
            .args(["measure", "--tee", "snp", "--firmware"])
            .arg(&fw)
            .args(["--vcpus", "2", "--cpu-type", "EPYC-v4", "--format", format])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let hex = run("hex");
    let hex = hex.trim();
    assert_eq!(hex.len(), 96);
    assert_eq!(run("toml"), format!("[snp]\nmeasurements = [\"{hex}\"]\n"));
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json["measurement"], hex);
}

#[test]
fn cli_explains_refusals_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let fw = tmp.path().join("fw.fd");
    std::fs::write(&fw, vec![0u8; 4096]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args(["measure", "--tee", "snp", "--firmware"])
        .arg(&fw)
        .args(["--vcpus", "2", "--cpu-type", "EPYC-v4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SEV-ES reset block"), "{err}");
}

#[test]
fn cli_prints_the_tdx_mrtd_fragment() {
    let tmp = tempfile::tempdir().unwrap();
    let fw = tmp.path().join("tdvf.fd");
    let img = TestImage::tdvf_default().build();
    std::fs::write(&fw, &img).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args(["measure", "--tee", "tdx", "--firmware"])
        .arg(&fw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let want = hex::encode(cvm_launch::tdx::mrtd::mrtd_of_firmware(&img).unwrap());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("[tdx]\nmrtd = [\"{want}\"]\n")
    );
    // An SNP-only image has no TDVF metadata: a clear refusal, exit 2.
    std::fs::write(&fw, TestImage::default().build()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-launch"))
        .args(["measure", "--tee", "tdx", "--firmware"])
        .arg(&fw)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TDX metadata"));
}
