//! Tests through the real `cvm-keys` binary: exit codes (0 ok, 1 refused, 2 usage/I/O), messages, and that a
//! refused unseal leaves no output file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cvm-keys");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        let o = run(&["keygen", "--out", s(&key)]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        Self { dir, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Seals `data` with a 16-byte chunk size and returns the sealed bytes.
    fn seal(&self, name: &str, data: &[u8]) -> Vec<u8> {
        let input = self.path(&format!("{name}.plain"));
        let out = self.path(&format!("{name}.sealed"));
        std::fs::write(&input, data).unwrap();
        let o = run(&[
            "seal",
            "--key-file",
            s(&self.key),
            "--in",
            s(&input),
            "--out",
            s(&out),
            "--chunk-size",
            "16",
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        std::fs::read(out).unwrap()
    }

    /// Unseals `sealed` (written to a file) to a fresh output path; returns the process output and whether an
    /// output file exists afterwards.
    fn unseal_bytes(&self, sealed: &[u8], key: &Path) -> (Output, bool) {
        let input = self.path("probe.sealed");
        let out = self.path("probe.out");
        std::fs::write(&input, sealed).unwrap();
        let o = run(&[
            "unseal",
            "--key-file",
            s(key),
            "--in",
            s(&input),
            "--out",
            s(&out),
        ]);
        let exists = out.exists();
        let _ = std::fs::remove_file(&out);
        (o, exists)
    }

    /// Asserts that unsealing `sealed` is refused: exit 1, a message, no output file, no stray files.
    fn assert_refused(&self, sealed: &[u8], what: &str) {
        let (o, exists) = self.unseal_bytes(sealed, &self.key);
        assert_eq!(code(&o), 1, "{what}: {}", stderr(&o));
        assert!(!exists, "{what}: an output file was left behind");
        assert!(stderr(&o).contains("refused"), "{what}: {}", stderr(&o));
        let stray = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(stray, 0, "{what}: temporary file left behind");
    }
}

/// (start, end) of each chunk of a file sealed with 16-byte chunks.
fn chunks(sealed: &[u8]) -> Vec<(usize, usize)> {
    let (_, mut pos) = cvm_keys::seal::Header::parse(sealed).unwrap();
    let mut v = Vec::new();
    while pos < sealed.len() {
        let end = (pos + 32).min(sealed.len());
        v.push((pos, end));
        pos = end;
    }
    v
}

fn plaintext() -> Vec<u8> {
    (0..70u8).collect()
}

#[test]
fn round_trips_through_files_and_pipes() {
    let f = Fixture::new();
    let sealed = f.seal("a", &plaintext());
    let (o, exists) = f.unseal_bytes(&sealed, &f.key);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(exists);

    // stdin -> stdout
    let mut child = Command::new(BIN)
        .args(["unseal", "--key-file", s(&f.key), "--in", "-", "--out", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&sealed).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0);
    assert_eq!(o.stdout, plaintext());
}

#[test]
fn rejects_any_single_flipped_byte_with_exit_1_and_no_output() {
    let f = Fixture::new();
    let sealed = f.seal("a", &plaintext());
    assert_eq!(chunks(&sealed).len(), 5, "a multi-chunk file");
    for pos in 0..sealed.len() {
        let mut t = sealed.clone();
        t[pos] ^= 0x01;
        f.assert_refused(&t, &format!("flipped byte {pos} of {}", sealed.len()));
    }
}

#[test]
fn rejects_truncation_at_and_between_chunk_boundaries_with_exit_1() {
    let f = Fixture::new();
    let sealed = f.seal("a", &plaintext());
    for len in 0..sealed.len() {
        f.assert_refused(&sealed[..len], &format!("truncated to {len}"));
    }
}

#[test]
fn rejects_truncation_at_chunk_boundary_of_full_chunks() {
    let f = Fixture::new();
    let sealed = f.seal("a", &[7u8; 64]);
    for (_, end) in &chunks(&sealed)[..3] {
        f.assert_refused(&sealed[..*end], &format!("cut at boundary {end}"));
    }
}

#[test]
fn rejects_two_chunks_swapped() {
    let f = Fixture::new();
    let sealed = f.seal("a", &plaintext());
    let c = chunks(&sealed);
    let mut t = sealed.clone();
    t[c[1].0..c[1].1].copy_from_slice(&sealed[c[2].0..c[2].1]);
    t[c[2].0..c[2].1].copy_from_slice(&sealed[c[1].0..c[1].1]);
    f.assert_refused(&t, "chunks 1 and 2 swapped");
}

#[test]
fn rejects_a_chunk_from_another_file_with_the_same_key() {
    let f = Fixture::new();
    let a = f.seal("a", &plaintext());
    let b = f.seal("b", &plaintext());
    let (ca, cb) = (chunks(&a), chunks(&b));
    let mut t = a.clone();
    t[ca[2].0..ca[2].1].copy_from_slice(&b[cb[2].0..cb[2].1]);
    f.assert_refused(&t, "chunk 2 from another file");
}

#[test]
fn rejects_the_wrong_key_naming_both_key_ids() {
    let f = Fixture::new();
    let sealed = f.seal("a", &plaintext());
    let other = f.path("other.key");
    assert_eq!(code(&run(&["keygen", "--out", s(&other)])), 0);
    let (o, exists) = f.unseal_bytes(&sealed, &other);
    assert_eq!(code(&o), 1);
    assert!(!exists);
    let err = stderr(&o);
    assert!(
        err.contains("wrong key") && err.contains("sealed for key id"),
        "{err}"
    );
}

#[test]
fn rejects_a_file_that_is_not_sealed() {
    let f = Fixture::new();
    f.assert_refused(b"just some plaintext\n", "plain text");
    f.assert_refused(b"", "empty file");
    let o = run(&["inspect", s(&f.key)]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("not a cvm sealed file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn inspect_prints_the_header_as_json() {
    let f = Fixture::new();
    f.seal("a", b"x");
    let o = run(&["inspect", "--json", s(&f.path("a.sealed"))]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chunk_size"], 16);
    assert_eq!(v["algorithm"], "AES-256-GCM-STREAM");
    assert_eq!(v["key_id"].as_str().unwrap().len(), 32);
}

#[test]
fn keygen_refuses_to_overwrite_with_exit_2() {
    let f = Fixture::new();
    let before = std::fs::read(&f.key).unwrap();
    let o = run(&["keygen", "--out", s(&f.key)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("already exists"));
    assert_eq!(std::fs::read(&f.key).unwrap(), before);
}

#[test]
fn unseal_refuses_to_overwrite_an_existing_output_with_exit_2() {
    let f = Fixture::new();
    f.seal("a", b"data");
    let out = f.path("a.plain");
    let o = run(&[
        "unseal",
        "--key-file",
        s(&f.key),
        "--in",
        s(&f.path("a.sealed")),
        "--out",
        s(&out),
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("already exists"));
}

#[test]
fn reports_a_bad_key_file_and_a_missing_input_with_exit_2_naming_the_file() {
    let f = Fixture::new();
    let bad = f.path("bad.key");
    std::fs::write(&bad, "cvm-key-v1:1234\n").unwrap();
    let o = run(&[
        "seal",
        "--key-file",
        s(&bad),
        "--in",
        s(&bad),
        "--out",
        s(&f.path("x")),
    ]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.contains("bad.key") && err.contains("64 hex digits"),
        "{err}"
    );
    assert!(
        !err.contains("Os {") && !err.contains("kind:"),
        "debug dump: {err}"
    );

    let missing = f.path("missing");
    let o = run(&[
        "seal",
        "--key-file",
        s(&f.key),
        "--in",
        s(&missing),
        "--out",
        s(&f.path("y")),
    ]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
    assert!(!f.path("y").exists());
}

#[test]
fn usage_errors_exit_2_and_every_command_has_help() {
    assert_eq!(code(&run(&["seal"])), 2);
    assert_eq!(code(&run(&["no-such-command"])), 2);
    for cmd in [
        &["--help"][..],
        &["keygen", "--help"],
        &["seal", "--help"],
        &["unseal", "--help"],
        &["inspect", "--help"],
        &["ca", "init", "--help"],
        &["bench", "--help"],
    ] {
        let o = run(cmd);
        assert_eq!(code(&o), 0, "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage"),
            "{cmd:?}"
        );
    }
}

#[test]
fn ca_init_writes_six_files_and_refuses_to_run_twice() {
    let f = Fixture::new();
    let dir = f.path("ca");
    let args = [
        "ca",
        "init",
        "--out",
        s(&dir),
        "--server-name",
        "localhost",
        "--server-name",
        "127.0.0.1",
    ];
    let o = run(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for name in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "admin.pem",
        "admin.key",
    ] {
        assert!(dir.join(name).exists(), "{name}");
    }
    let o = run(&args);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("already exists"));
}

#[test]
fn bench_runs_on_a_small_size() {
    let o = run(&["bench", "--size", "1MiB"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ratio") && out.contains("peak RSS"), "{out}");
}
