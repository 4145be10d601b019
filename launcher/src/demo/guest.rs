//! The Linux guest's parts of a launch, each run as a process in the stack's working directory: disks
//! (`mke2fs -d`, and `cryptsetup reencrypt --encrypt` for a LUKS2 volume — offline, no device-mapper on the
//! host), the guest image (`cvm-launch image`), its reference value (`cvm-launch measure --tee sim
//! --kernel`), and the boot (`cvm-launch run --vmm qemu`, the console to a file). The demo strings them
//! together; the end-to-end tests reorder them.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::Finished;
use super::stack::{EvidenceFormat, Service, Stack, StackError};
use crate::kit::Kit;

/// The kernel command line of every guest here: the console on COM1, a reboot (which ends the run)
/// after a panic, and the kernel's own messages kept short.
pub const GUEST_APPEND: &str = "console=ttyS0 panic=-1 quiet";
/// Guest RAM, MiB.
pub const GUEST_MEMORY_MIB: u32 = 512;
/// The longest a guest may run before it is stopped.
pub const GUEST_TIMEOUT_SECS: u64 = 240;
/// The filesystem of a disk, MiB.
const FS_MIB: u64 = 32;
/// What `cryptsetup reencrypt --encrypt` reserves for the LUKS2 header, MiB (twice the header).
const LUKS_RESERVE_MIB: u64 = 16;
/// PBKDF2 iterations of the keyslot: the key is a random 256-bit secret, so no stretching is needed.
const LUKS_ITERATIONS: &str = "1000";

/// What a guest run showed.
#[derive(Debug)]
pub struct GuestRun {
    /// `cvm-launch run`'s exit status and its own lines (stderr).
    pub launcher: Finished,
    /// The guest's console.
    pub console: String,
    /// Each console line with the time it arrived, from the start of `cvm-launch run`.
    pub timeline: Vec<(Duration, String)>,
}

impl GuestRun {
    /// The console's lines that start with `prefix`, without it.
    pub fn lines_after<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.console
            .lines()
            .filter_map(move |l| l.strip_prefix(prefix))
    }

    /// The guest kernel's version line (`Linux version …`) that the init prints.
    pub fn kernel_version(&self) -> Option<&str> {
        self.lines_after(crate::image::init::PREFIX)
            .find(|l| l.starts_with("Linux version"))
    }

    /// When the first console line for which `pred` holds arrived.
    pub fn time_of(&self, pred: impl Fn(&str) -> bool) -> Option<Duration> {
        self.timeline.iter().find(|(_, l)| pred(l)).map(|(t, _)| *t)
    }
}

impl Stack {
    /// An ext4 filesystem of the files in `dir/source` written to the raw disk image `dir/image`.
    pub fn ext4_disk(&self, kit: &Kit, source: &str, image: &str) -> Result<(), StackError> {
        let size = format!("{FS_MIB}M");
        let args = ["-q", "-t", "ext4", "-d", source, image, &size];
        self.checked(&kit.mke2fs, &args, "mke2fs.log").map(drop)
    }

    /// An ext4 filesystem of the files in `dir/source`, encrypted as a LUKS2 volume whose keyslot opens
    /// with the contents of `key_file`: the filesystem is written in the clear to the image first and then
    /// encrypted in place by `cryptsetup reencrypt --encrypt` (offline: the host needs no device-mapper).
    pub fn luks_disk(
        &self,
        kit: &Kit,
        source: &str,
        key_file: &str,
        image: &str,
    ) -> Result<(), StackError> {
        let file = std::fs::File::create(self.path(image)).map_err(|e| StackError::Io {
            what: format!("create {image}"),
            source: e,
        })?;
        file.set_len((FS_MIB + LUKS_RESERVE_MIB) << 20)
            .map_err(|e| StackError::Io {
                what: format!("size {image}"),
                source: e,
            })?;
        drop(file);
        let size = format!("{FS_MIB}M");
        self.checked(
            &kit.mke2fs,
            &["-q", "-t", "ext4", "-d", source, image, &size],
            "mke2fs.log",
        )?;
        let reserve = format!("{LUKS_RESERVE_MIB}M");
        self.checked(
            &kit.cryptsetup,
            &[
                "reencrypt",
                "--encrypt",
                "--type",
                "luks2",
                "--reduce-device-size",
                &reserve,
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                LUKS_ITERATIONS,
                "--key-file",
                key_file,
                "--batch-mode",
                image,
            ],
            "cryptsetup.log",
        )
        .map(drop)
    }

    /// `cvm-launch image --out IMAGE` with the kit's busybox, cryptsetup and kernel modules, the stack's
    /// CA, and `args` (the unlock, mounts, `--tee`, and `-- WORKLOAD`).
    pub fn guest_image(
        &self,
        kit: &Kit,
        image: &str,
        args: &[&str],
    ) -> Result<Finished, StackError> {
        let launch = self.programs().launch.clone();
        let modules = kit.modules.display().to_string();
        let busybox = kit.busybox.display().to_string();
        let cryptsetup = kit.cryptsetup.display().to_string();
        let agent = self.programs().agent.display().to_string();
        let mut all = vec![
            "image",
            "--force",
            "--out",
            image,
            "--ca",
            "pki/ca.pem",
            "--kernel-modules",
            &modules,
            "--busybox",
            &busybox,
            "--cryptsetup",
            &cryptsetup,
            "--agent",
            &agent,
        ];
        all.extend_from_slice(args);
        self.checked(&launch, &all, "image.log")
    }

    /// `cvm-launch measure --tee sim --kernel … --initrd IMAGE` with the guests' command line and memory:
    /// the policy fragment (`[snp] measurements`, or `[tdx] mrtd` for TDX-format evidence).
    pub fn measure_linux(
        &self,
        kit: &Kit,
        image: &str,
        format: EvidenceFormat,
    ) -> Result<String, StackError> {
        let launch = self.programs().launch.clone();
        let evidence = match format {
            EvidenceFormat::Snp => "snp",
            EvidenceFormat::Tdx => "tdx",
        };
        let mut args = vec!["measure".to_owned(), "--tee".into(), "sim".into()];
        args.extend(boot_inputs(kit, image));
        args.extend(["--evidence".to_owned(), evidence.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let done = self.checked(&launch, &args, "measure.log")?;
        Ok(String::from_utf8_lossy(&done.stdout).into_owned())
    }

    /// Boots `image` with `cvm-launch run --vmm qemu --tee sim` (the attestation service forwarded, `disks`
    /// attached in order, then `extra` arguments) until the guest powers off; the console is timed line
    /// by line and written to `console_file` in the working directory. A guest that does not power off
    /// is not an error here: the caller reads the status.
    pub fn boot_linux(
        &self,
        kit: &Kit,
        service: &Service,
        image: &str,
        disks: &[&str],
        console_file: &str,
        extra: &[&str],
    ) -> Result<GuestRun, StackError> {
        let launch = self.programs().launch.clone();
        let mut args: Vec<String> = [
            "run",
            "--vmm",
            "qemu",
            "--tee",
            "sim",
            "--sim-dir",
            "sim",
            "--qemu",
        ]
        .map(str::to_owned)
        .into();
        args.push(kit.qemu.display().to_string());
        args.extend(boot_inputs(kit, image));
        args.extend([
            "--attest-forward".to_owned(),
            service.port().to_string(),
            "--timeout".into(),
            GUEST_TIMEOUT_SECS.to_string(),
        ]);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        for d in disks {
            args.extend(["--disk", d]);
        }
        args.extend_from_slice(extra);
        let mut cmd = Command::new(&launch);
        cmd.args(&args).current_dir(self.path(""));
        let (launcher, timeline) = run_timed(&mut cmd)?;
        let console: String = timeline.iter().map(|(_, l)| format!("{l}\n")).collect();
        std::fs::write(self.path(console_file), &console).map_err(|source| StackError::Io {
            what: format!("write {console_file}"),
            source,
        })?;
        std::fs::write(
            self.path(&format!("{console_file}.run.log")),
            &launcher.output,
        )
        .map_err(|source| StackError::Io {
            what: format!("write {console_file}.run.log"),
            source,
        })?;
        Ok(GuestRun {
            launcher,
            console,
            timeline,
        })
    }
}

/// The boot's measured inputs, the same for `measure` and `run`: `--kernel`, `--initrd IMAGE`, `--append`,
/// `--memory`.
fn boot_inputs(kit: &Kit, image: &str) -> [String; 8] {
    [
        "--kernel".into(),
        kit.kernel.display().to_string(),
        "--initrd".into(),
        image.into(),
        "--append".into(),
        GUEST_APPEND.into(),
        "--memory".into(),
        GUEST_MEMORY_MIB.to_string(),
    ]
}

/// Runs `cmd` to its end, timing each line of its stdout from the start; its stderr is kept whole.
fn run_timed(cmd: &mut Command) -> Result<(Finished, Vec<(Duration, String)>), StackError> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| StackError::Io {
            what: "start cvm-launch run".into(),
            source,
        })?;
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let mut timeline = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            timeline.push((start.elapsed(), line));
        }
    }
    let status = child.wait().map_err(|source| StackError::Io {
        what: "wait for cvm-launch run".into(),
        source,
    })?;
    let output = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok((
        Finished {
            status,
            output,
            stdout: Vec::new(),
        },
        timeline,
    ))
}

/// `image` with one byte changed where the kernel does not look: the gzip header's modification time.
/// The guest boots exactly as before, but its measurement differs.
pub fn tamper_image(image: &[u8]) -> Vec<u8> {
    let mut t = image.to_vec();
    if let Some(b) = t.get_mut(4) {
        *b ^= 0x01;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tampered_byte_is_the_gzip_time() {
        let gz = crate::image::cpio::gzip(b"payload");
        let t = tamper_image(&gz);
        assert_eq!(t.iter().zip(&gz).filter(|(a, b)| a != b).count(), 1);
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&t[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"payload");
    }
}
