//! `cvm-agent --protocol kbs` against `cvm-attest serve` with `[kbs] enabled = true` (simulated mode, on
//! loopback), with simulated SNP and TDX evidence from the simulated PSP socket: the whole RCAR flow
//! (auth, attest, resource as a JWE) releases the resource `default/key/db`; a resource whose policy names
//! another measurement is refused with its code; a non-KBS resource name is a usage error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, MEASUREMENT, OTHER, PspSocket, Service, agent, stderr};

fn kbs_service() -> (Fixture, Service) {
    let f = Fixture::new("127.0.0.1:0");
    let config = f.path("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[kbs]\nenabled = true\n");
    std::fs::write(&config, text).unwrap();
    let s = Service::start(&f);
    (f, s)
}

fn fetch(
    f: &Fixture,
    s: &Service,
    psp: &PspSocket,
    tee: &str,
    resource: &str,
    out: &str,
) -> std::process::Output {
    let url = s.url();
    let ca = f.ca().display().to_string();
    let sock = psp.path.display().to_string();
    agent(&[
        "unlock",
        "--protocol",
        "kbs",
        "--server",
        &url,
        "--ca",
        &ca,
        "--resource",
        resource,
        "--tee",
        tee,
        "--sim-socket",
        &sock,
        "--secret-out",
        out,
        "--attempts",
        "1",
    ])
}

#[test]
fn the_agent_fetches_a_kbs_resource_with_simulated_snp_and_tdx_evidence() {
    let (f, s) = kbs_service();
    s.put(&f, "default/key/db", b"kbs secret");
    let psp = PspSocket::start(MEASUREMENT);
    for tee in ["sim", "sim-tdx"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("secret").display().to_string();
        let o = fetch(&f, &s, &psp, tee, "default/key/db", &out);
        assert!(o.status.success(), "{tee}: {}", stderr(&o));
        assert_eq!(std::fs::read(&out).unwrap(), b"kbs secret", "{tee}");
    }
}

#[test]
fn a_kbs_resource_outside_its_policy_is_refused_with_the_policy_code() {
    let (f, s) = kbs_service();
    s.put(&f, "default/key/db", b"kbs secret");
    let psp = PspSocket::start(OTHER);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("secret").display().to_string();
    let o = fetch(&f, &s, &psp, "sim", "default/key/db", &out);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("POLICY_MEASUREMENT"), "{}", stderr(&o));
    assert!(!std::path::Path::new(&out).exists());
    let o = fetch(&f, &s, &psp, "sim", "db", &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("<repository>/<type>/<tag>"),
        "{}",
        stderr(&o)
    );
}
