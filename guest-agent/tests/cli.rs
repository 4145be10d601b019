//! The `cvm-agent` binary against a simulated-mode `cvm-attest serve` on loopback, with evidence from a
//! simulated PSP socket: unlocking sealed files and secrets, running the workload, and refusals that exit
//! non-zero, write nothing and print the server's reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, PspSocket, Service, agent, stderr};
use cvm_keys::Key256;
use cvm_keys::seal::{SealOptions, seal_to_path};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

struct Env {
    f: Fixture,
    s: Service,
    psp: PspSocket,
    work: tempfile::TempDir,
}

fn env(measurement: [u8; 48]) -> Env {
    let f = Fixture::new("127.0.0.1:0");
    let s = Service::start(&f);
    Env {
        f,
        s,
        psp: PspSocket::start(measurement),
        work: tempfile::tempdir().unwrap(),
    }
}

impl Env {
    fn base<'a>(&'a self, resource: &'a str, url: &'a str, ca: &'a Path) -> Vec<String> {
        vec![
            "--server".into(),
            url.into(),
            "--ca".into(),
            ca.display().to_string(),
            "--resource".into(),
            resource.into(),
            "--tee".into(),
            "sim".into(),
            "--sim-socket".into(),
            self.psp.path.display().to_string(),
            "--backoff-ms".into(),
            "100".into(),
        ]
    }

    fn unlock(&self, resource: &str, extra: &[&str]) -> std::process::Output {
        let url = self.s.url();
        let ca = self.f.ca();
        let mut args = vec!["unlock".to_string()];
        args.extend(self.base(resource, &url, &ca));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        agent(&refs)
    }

    fn path(&self, rel: &str) -> String {
        self.work.path().join(rel).display().to_string()
    }
}

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn mode(p: &str) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn unlocks_a_50_mib_sealed_file_to_a_path_and_to_stdout() {
    let e = env(common::MEASUREMENT);
    let key = Key256::generate().unwrap();
    let plain = data(50 * 1024 * 1024 + 123);
    let sealed = e.path("data.sealed");
    seal_to_path(
        &key,
        plain.as_slice(),
        Path::new(&sealed),
        SealOptions::default(),
        false,
    )
    .unwrap();
    e.s.put(&e.f, "disk", key.as_bytes());
    let out = e.path("data.plain");
    let o = e.unlock("disk", &["--sealed", &sealed, "--out", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&out).unwrap() == plain);
    assert_eq!(mode(&out), 0o600);
    assert!(
        stderr(&o).contains("snp-format evidence from the simulated PSP at"),
        "{}",
        stderr(&o)
    );
    let o = e.unlock("disk", &["--sealed", &sealed, "--out", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == plain);
}

#[test]
fn writes_the_secret_and_runs_the_workload_with_it() {
    let e = env(common::MEASUREMENT);
    e.s.put(&e.f, "token", b"s3cret-token");
    let out = e.path("secret");
    let o = e.unlock("token", &["--secret-out", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"s3cret-token");
    assert_eq!(mode(&out), 0o600);

    let out2 = e.path("secret2");
    let url = e.s.url();
    let ca = e.f.ca();
    let mut args = vec!["run".to_string()];
    args.extend(e.base("token", &url, &ca));
    let script = format!("printf 'workload saw %s' \"$(cat {out2})\"");
    args.extend(
        ["--secret-out", &out2, "--", "sh", "-c", &script]
            .iter()
            .map(|s| s.to_string()),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = agent(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "workload saw s3cret-token"
    );
}

#[test]
fn an_existing_output_is_replaced_only_with_force() {
    let e = env(common::MEASUREMENT);
    let key = Key256::generate().unwrap();
    let sealed = e.path("data.sealed");
    seal_to_path(
        &key,
        &b"fresh plaintext"[..],
        Path::new(&sealed),
        SealOptions::default(),
        false,
    )
    .unwrap();
    e.s.put(&e.f, "disk", key.as_bytes());
    e.s.put(&e.f, "token", b"fresh secret");
    let out = e.path("plain");
    let secret = e.path("secret");
    std::fs::write(&out, b"the workload's data").unwrap();
    std::fs::write(&secret, b"an older secret").unwrap();
    // As `cvm-keys unseal`: refused (usage, exit 2) before attesting, the file untouched.
    for (resource, args, path, old) in [
        (
            "disk",
            vec!["--sealed", &sealed, "--out", &out],
            &out,
            &b"the workload's data"[..],
        ),
        (
            "token",
            vec!["--secret-out", &secret],
            &secret,
            &b"an older secret"[..],
        ),
    ] {
        let o = e.unlock(resource, &args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("attesting"), "{}", stderr(&o));
        assert_eq!(std::fs::read(path).unwrap(), old);
    }
    let o = e.unlock("disk", &["--sealed", &sealed, "--out", &out, "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"fresh plaintext");
    let o = e.unlock("token", &["--secret-out", &secret, "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&secret).unwrap(), b"fresh secret");
    assert_eq!(mode(&secret), 0o600);
    // Nothing but the files themselves in the directory.
    assert_eq!(std::fs::read_dir(e.work.path()).unwrap().count(), 3);
    // --force alone means nothing.
    let o = e.unlock("token", &["--force"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn refusals_exit_non_zero_write_nothing_and_say_why() {
    let e = env(common::OTHER);
    let key = Key256::generate().unwrap();
    let sealed = e.path("data.sealed");
    seal_to_path(
        &key,
        &b"abc"[..],
        Path::new(&sealed),
        SealOptions::default(),
        false,
    )
    .unwrap();
    e.s.put(&e.f, "disk", key.as_bytes());
    let out = e.path("plain");

    // Wrong measurement.
    let o = e.unlock("disk", &["--sealed", &sealed, "--out", &out]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("POLICY_MEASUREMENT"), "{err}");
    assert!(err.contains("cvm-launch measure"), "{err}");
    assert!(!Path::new(&out).exists());
    // Nothing else in the work dir (no temporary files left).
    assert_eq!(std::fs::read_dir(e.work.path()).unwrap().count(), 1);

    // Unknown resource.
    let o = e.unlock("nope", &["--secret-out", &out]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("UNKNOWN_RESOURCE"), "{}", stderr(&o));
    assert!(!Path::new(&out).exists());

    // A server whose certificate another CA signed: not trusted, not retried.
    let other = Fixture::new("127.0.0.1:0");
    let url = e.s.url();
    let ca = other.ca();
    let mut args = vec!["unlock".to_string()];
    args.extend(e.base("disk", &url, &ca));
    args.extend(["--secret-out".to_string(), out.clone()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = std::time::Instant::now();
    let o = agent(&refs);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("--ca"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("retrying"), "{}", stderr(&o));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert!(!Path::new(&out).exists());

    // Missing sealed input: refused before attesting.
    let o = e.unlock("disk", &["--sealed", &e.path("missing"), "--out", &out]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
}

#[test]
fn retries_while_the_server_is_down_and_succeeds_when_it_comes_up() {
    // Reserve a port, register the secret on a first run of the service, stop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = Fixture::new(&format!("127.0.0.1:{port}"));
    let s = Service::start(&f);
    s.put(&f, "db", b"after the outage");
    let url = s.url();
    s.stop();

    let psp = PspSocket::start(common::MEASUREMENT);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("secret").display().to_string();
    let ca = f.ca().display().to_string();
    let sock = psp.path.display().to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cvm-agent"))
        .args([
            "unlock",
            "--server",
            &url,
            "--ca",
            &ca,
            "--resource",
            "db",
            "--tee",
            "sim",
            "--sim-socket",
            &sock,
            "--backoff-ms",
            "200",
            "--attempts",
            "12",
            "--secret-out",
            &out,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let s = Service::start(&f);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("retrying"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"after the outage");
    drop(s);

    // Down for good: exits 4 after the attempts, nothing written.
    let out2 = work.path().join("secret2").display().to_string();
    let o = agent(&[
        "unlock",
        "--server",
        &url,
        "--ca",
        &ca,
        "--resource",
        "db",
        "--tee",
        "sim",
        "--sim-socket",
        &sock,
        "--backoff-ms",
        "10",
        "--attempts",
        "3",
        "--secret-out",
        &out2,
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("unreachable after 3"), "{}", stderr(&o));
    assert!(!Path::new(&out2).exists());
}

#[test]
fn evidence_command_writes_a_report_over_the_given_report_data() {
    let psp = PspSocket::start(common::MEASUREMENT);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("report.bin");
    let certs = work.path().join("vcek.der");
    let rd = "ab".repeat(64);
    let o = agent(&[
        "evidence",
        "--tee",
        "sim",
        "--sim-socket",
        &psp.path.display().to_string(),
        "--report-data",
        &rd,
        "--out",
        &out.display().to_string(),
        "--certs-out",
        &certs.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = std::fs::read(&out).unwrap();
    assert_eq!(&report[0x50..0x90], &[0xab; 64][..]);
    assert!(!std::fs::read(&certs).unwrap().is_empty());
    let o = agent(&[
        "evidence",
        "--tee",
        "sim",
        "--report-data",
        "zz",
        "--out",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn luks_gets_the_key_on_stdin_never_in_argv() {
    let e = env(common::MEASUREMENT);
    e.s.put(&e.f, "luks", b"\x01\x02luks-key\xff");
    let dir = e.work.path();
    let fake = dir.join("cryptsetup");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" > {d}/args\ncat > {d}/stdin\n\
             if [ -e {d}/refuse ]; then echo 'No key available with this passphrase.' >&2; exit 2; fi\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.display().to_string();
    let o = e.unlock(
        "luks",
        &[
            "--luks",
            "/dev/vdb",
            "--name",
            "data",
            "--cryptsetup",
            &fake,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let args = std::fs::read_to_string(dir.join("args")).unwrap();
    assert_eq!(args.trim(), "open --type luks2 --key-file=- /dev/vdb data");
    assert_eq!(
        std::fs::read(dir.join("stdin")).unwrap(),
        b"\x01\x02luks-key\xff"
    );

    let o = e.unlock(
        "luks",
        &["--luks", "/dev/vdb", "--luks-check", "--cryptsetup", &fake],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let args = std::fs::read_to_string(dir.join("args")).unwrap();
    assert_eq!(
        args.trim(),
        "open --type luks2 --key-file=- --test-passphrase /dev/vdb"
    );

    std::fs::write(dir.join("refuse"), b"").unwrap();
    let o = e.unlock(
        "luks",
        &[
            "--luks",
            "/dev/vdb",
            "--name",
            "data",
            "--cryptsetup",
            &fake,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("No key available"), "{}", stderr(&o));
    let o = e.unlock("luks", &["--luks", "/dev/vdb", "--cryptsetup", &fake]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn options_come_from_a_config_file_and_the_command_line_wins() {
    let e = env(common::MEASUREMENT);
    e.s.put(&e.f, "cfg", b"from config");
    let out = e.path("secret");
    let config = e.path("agent.toml");
    std::fs::write(
        &config,
        format!(
            "server = {:?}\nca = {:?}\nresource = \"nope\"\ntee = \"sim\"\nsim_socket = {:?}\n\
             omit_certs = true\nbackoff_ms = 100\nsecret_out = {:?}\n",
            e.s.url(),
            e.f.ca().display().to_string(),
            e.psp.path.display().to_string(),
            out
        ),
    )
    .unwrap();
    let o = agent(&["unlock", "--config", &config, "--resource", "cfg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"from config");
    // Without the override the file's resource is used (and refused).
    std::fs::remove_file(&out).unwrap();
    let o = agent(&["unlock", "--config", &config]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("UNKNOWN_RESOURCE"));
    assert!(!Path::new(&out).exists());
    // Unknown keys and missing required options are usage errors.
    std::fs::write(&config, "sever = \"x\"\n").unwrap();
    let o = agent(&["unlock", "--config", &config]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = agent(&["unlock", "--ca", "x", "--resource", "r"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--server is required"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn help_names_the_probe_order_and_vmpl_is_checked() {
    for sub in ["unlock", "evidence"] {
        let o = agent(&[sub, "--help"]);
        assert!(o.status.success());
        let help = String::from_utf8_lossy(&o.stdout);
        for part in ["/dev/sev-guest", "/dev/tdx_guest", "configfs-tsm", "--vmpl"] {
            assert!(help.contains(part), "{sub} --help lacks {part}: {help}");
        }
    }
    let o = agent(&[
        "evidence",
        "--vmpl",
        "4",
        "--report-data",
        "00",
        "--out",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("0..=3"), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "vmpl = 7\n").unwrap();
    let config = config.display().to_string();
    let o = agent(&[
        "unlock",
        "--config",
        &config,
        "--server",
        "https://127.0.0.1:1",
        "--ca",
        "ca.pem",
        "--resource",
        "r",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("VMPLs 0 to 3"), "{}", stderr(&o));
}
