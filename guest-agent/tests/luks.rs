//! LUKS2 with the real `cryptsetup` (installed by `.ci/run`): a test formats an image, registers its key on
//! a simulated-mode `cvm-attest serve`, and the agent unlocks it. The key reaches cryptsetup on its stdin
//! only: a wrapper given with `--cryptsetup` logs the argv and environment it was started with, and neither
//! holds the key. `cryptsetup open` that maps the device runs only where the kernel has device-mapper; it is
//! skipped with a printed reason elsewhere, as is everything here when cryptsetup is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, PspSocket, Service, agent, stderr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The real cryptsetup, or the reason the tests skip.
fn cryptsetup() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("cryptsetup"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "cryptsetup not found (on PATH, /usr/sbin, /sbin); .ci/run installs cryptsetup-bin"
                .into()
        })
}

/// Whether `cryptsetup open` can map a device here, or why not.
fn device_mapper() -> Result<(), String> {
    let misc =
        std::fs::read_to_string("/proc/misc").map_err(|e| format!("read /proc/misc: {e}"))?;
    if !misc.lines().any(|l| l.trim().ends_with("device-mapper")) {
        return Err(
            "this kernel has no device-mapper (no `device-mapper` in /proc/misc; dm_mod not \
                    loaded or not built)"
                .into(),
        );
    }
    if !Path::new("/dev/mapper/control").exists() {
        return Err("/dev/mapper/control is missing".into());
    }
    Ok(())
}

/// A 32 MiB LUKS2 image whose only key is `key`, with a cheap KDF so that the tests are quick.
fn luks_image(cryptsetup: &Path, dir: &Path, name: &str, key: &[u8]) -> PathBuf {
    let img = dir.join(name);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&key_file, key).unwrap();
    let o = Command::new(cryptsetup)
        .args(["luksFormat", "--type", "luks2", "--batch-mode"])
        .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
        .arg("--key-file")
        .arg(&key_file)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "luksFormat: {}", stderr(&o));
    std::fs::remove_file(&key_file).unwrap();
    img
}

/// A wrapper around the real cryptsetup that appends its argv (one line) and environment to `log`.
fn logging_wrapper(real: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("cryptsetup.log");
    let wrapper = dir.join("cryptsetup-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"argv: $*\" >> '{log}'\nenv >> '{log}'\nexec '{real}' \"$@\"\n",
            log = log.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Closes the mapping when dropped (also when an assertion fails).
struct Mapping<'a> {
    cryptsetup: &'a Path,
    name: String,
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.cryptsetup)
            .args(["close", &self.name])
            .output();
    }
}

#[test]
fn agent_unlocks_a_real_luks2_image_with_the_released_key() {
    let real = match cryptsetup() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let f = Fixture::new("127.0.0.1:0");
    let s = Service::start(&f);
    let psp = PspSocket::start(common::MEASUREMENT);
    let work = tempfile::tempdir().unwrap();
    let key = cvm_keys::Key256::generate().unwrap().as_bytes().to_vec();
    let img = luks_image(&real, work.path(), "disk.img", &key);
    let other = luks_image(&real, work.path(), "other.img", b"a different key");
    s.put(&f, "disk", &key);
    let (wrapper, log) = logging_wrapper(&real, work.path());
    let run = |device: &Path, extra: &[&str]| {
        let mut args = vec![
            "unlock".to_string(),
            "--server".into(),
            s.url(),
            "--ca".into(),
            f.ca().display().to_string(),
            "--resource".into(),
            "disk".into(),
            "--tee".into(),
            "sim".into(),
            "--sim-socket".into(),
            psp.path.display().to_string(),
            "--luks".into(),
            device.display().to_string(),
            "--cryptsetup".into(),
            wrapper.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        agent(&refs)
    };

    // --luks-check: cryptsetup open --test-passphrase, nothing mapped.
    let o = run(&img, &["--luks-check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("opens"), "{}", stderr(&o));
    let logged = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&logged);
    assert!(
        text.contains(&format!(
            "argv: open --type luks2 --key-file=- --test-passphrase {}",
            img.display()
        )),
        "{text}"
    );
    // The key is in neither the argv nor the environment cryptsetup saw, raw or in hex.
    assert!(!contains(&logged, &key));
    assert!(!text.contains(&hex::encode(&key)));

    // A LUKS image with another key: refused, non-zero, and the message names the device and the fix.
    let o = run(&other, &["--luks-check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&other.display().to_string()), "{err}");
    assert!(err.contains("No key available"), "{err}");
    assert!(err.contains("what to do"), "{err}");

    // The real open, which maps the device: only where device-mapper exists.
    if let Err(why) = device_mapper() {
        eprintln!("skipped: the mapping `cryptsetup open` (with --name): {why}");
        return;
    }
    let name = format!("cvm-agent-test-{}", std::process::id());
    let mapping = Mapping {
        cryptsetup: &real,
        name: name.clone(),
    };
    let o = run(&img, &["--name", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mapped = PathBuf::from("/dev/mapper").join(&name);
    assert!(mapped.exists(), "{} missing", mapped.display());
    // Data written through the mapping reads back, and is not in the image in clear.
    let pattern = b"cvm-agent wrote this through dm-crypt".repeat(100);
    std::fs::write(&mapped, &pattern).unwrap();
    let mut back = std::fs::read(&mapped).unwrap();
    back.truncate(pattern.len());
    assert_eq!(back, pattern);
    drop(mapping);
    assert!(!mapped.exists());
    assert!(!contains(
        &std::fs::read(&img).unwrap(),
        b"cvm-agent wrote this"
    ));
}
