//! The whole protocol over real HTTPS on loopback with fresh simulated evidence (`cvm_attest::sim`): secrets
//! released to SNP and TDX guests that prove what they run, and refused, with the right code and no secret,
//! to everything else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_common;

use cvm_attest::client::{ClientError, Evidence, EvidenceSource};
use cvm_attest::protocol::TeeKind;
use cvm_attest::sim::{Simulator, SnpRequest, TdxRequest};
use serve_common::{Fixture, Running, sim_dir, simulator};

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const OTHER: [u8; 48] = [0x33; 48];

/// What a (possibly misbehaving) guest sends.
#[derive(Clone, Copy)]
struct Guest {
    tee: TeeKind,
    measurement: [u8; 48],
    debug: bool,
    tamper: bool,
    unbound: bool,
    send_certs: bool,
}

impl Guest {
    fn good(tee: TeeKind) -> Self {
        Guest {
            tee,
            measurement: MEASUREMENT,
            debug: false,
            tamper: false,
            unbound: false,
            send_certs: false,
        }
    }
}

struct Source<'a> {
    sim: &'a Simulator,
    guest: Guest,
}

impl EvidenceSource for Source<'_> {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, String> {
        let g = self.guest;
        let report_data = if g.unbound { [0x11; 64] } else { *report_data };
        let (mut evidence, certs) = match g.tee {
            TeeKind::Snp => {
                let r = self
                    .sim
                    .amd
                    .snp_report(&SnpRequest {
                        report_data,
                        measurement: g.measurement,
                        debug: g.debug,
                        ..SnpRequest::default()
                    })
                    .map_err(|e| e.to_string())?;
                let certs = if g.send_certs {
                    vec![self.sim.amd.vcek_der().to_vec()]
                } else {
                    vec![]
                };
                (r, certs)
            }
            TeeKind::Tdx => {
                let q = self
                    .sim
                    .intel
                    .tdx_quote(&TdxRequest {
                        report_data,
                        mrtd: g.measurement,
                        debug: g.debug,
                        ..TdxRequest::default()
                    })
                    .map_err(|e| e.to_string())?;
                (q, vec![])
            }
        };
        if g.tamper {
            // A byte of the measurement (SNP offset 0x90; TDX MRTD in the body at 48 + 136).
            let at = match g.tee {
                TeeKind::Snp => 0x90,
                TeeKind::Tdx => 48 + 136,
            };
            evidence[at] ^= 1;
        }
        Ok(Evidence {
            tee: g.tee,
            evidence,
            certs,
        })
    }
}

fn policy() -> String {
    let m = hex::encode(MEASUREMENT);
    // An offline report_data in the policy is ignored by the service, which checks the nonce binding instead.
    let rd = "ab".repeat(64);
    format!(
        "[snp]\nmeasurements = [\"{m}\"]\nreport_data = \"{rd}\"\n[tdx]\nmrtd = [\"{m}\"]\nreport_data = \"{rd}\"\n"
    )
}

fn simulated_fixture() -> Fixture {
    let sim = sim_dir().join("sim");
    Fixture::new(
        &format!(
            "mode = \"simulated\"\nsim_dir = {:?}",
            sim.display().to_string()
        ),
        "",
    )
}

/// A simulated-mode service holding the secret "db" (value "v") under [`policy`].
async fn serving_db() -> (Fixture, Running) {
    let f = simulated_fixture();
    let s = Running::start(&f.config()).await;
    f.admin(s.addr)
        .put_secret("db", b"v", &policy())
        .await
        .unwrap();
    (f, s)
}

async fn fetch(
    f: &Fixture,
    s: &Running,
    resource: &str,
    guest: Guest,
) -> Result<Vec<u8>, ClientError> {
    let mut c = f.client(s.addr);
    let source = Source {
        sim: simulator(),
        guest,
    };
    c.fetch_secret(resource, &source)
        .await
        .map(|r| r.value.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_the_secret_to_snp_and_tdx_guests_with_a_verifiable_token() {
    let f = simulated_fixture();
    let s = Running::start(&f.config()).await;
    let secret = b"the database key".to_vec();
    f.admin(s.addr)
        .put_secret("db", &secret, &policy())
        .await
        .unwrap();
    let mut c = f.client(s.addr);
    let key = c.token_key().await.unwrap();
    for tee in [TeeKind::Snp, TeeKind::Tdx] {
        // Twice without certificates: the second uses the service's warm chain cache.
        for send_certs in [false, false, true] {
            let source = Source {
                sim: simulator(),
                guest: Guest {
                    send_certs,
                    ..Guest::good(tee)
                },
            };
            let released = c.fetch_secret("db", &source).await.unwrap();
            assert_eq!(&released.value[..], &secret[..]);
            let claims = cvm_attest::token::verify(&released.token, &key).unwrap();
            assert_eq!(claims.tee, if tee == TeeKind::Snp { "snp" } else { "tdx" });
            assert!(claims.simulated);
            assert_eq!(claims.measurement, MEASUREMENT);
            assert_eq!(claims.resource, "db");
            assert_eq!(claims.report_data.len(), 64);
            assert_eq!(
                claims.policy_id,
                cvm_attest::store::secrets::policy_id(&policy()).to_vec()
            );
            assert!(claims.exp > claims.iat);
            assert!(!claims.collateral.is_empty() || tee == TeeKind::Tdx);
        }
    }
    let audit = f.admin(s.addr).audit().await.unwrap();
    let releases: Vec<_> = audit.iter().filter(|l| l.contains("\"release\"")).collect();
    assert_eq!(releases.len(), 6);
    assert!(
        releases
            .iter()
            .all(|l| l.contains(&hex::encode(MEASUREMENT)) && l.contains("\"simulated\":true"))
    );
    assert!(audit.iter().all(|l| !l.contains("the database key")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_evidence_with_the_right_code_and_no_secret() {
    let (f, s) = serving_db().await;
    for tee in [TeeKind::Snp, TeeKind::Tdx] {
        let good = Guest::good(tee);
        let cases: [(Guest, &[&str]); 4] = [
            (
                Guest {
                    measurement: OTHER,
                    ..good
                },
                &["POLICY_MEASUREMENT"],
            ),
            (
                Guest {
                    debug: true,
                    ..good
                },
                &["POLICY_DEBUG"],
            ),
            (
                Guest {
                    unbound: true,
                    ..good
                },
                &["BINDING_MISMATCH"],
            ),
            (
                Guest {
                    tamper: true,
                    ..good
                },
                &["SIGNATURE_INVALID", "QE_REPORT_SIG_INVALID"],
            ),
        ];
        for (guest, codes) in cases {
            let e = fetch(&f, &s, "db", guest).await.unwrap_err();
            let code = e.code().unwrap_or_else(|| panic!("{e}"));
            assert!(
                codes.contains(&code),
                "{tee:?}: {code} not in {codes:?}: {e}"
            );
            assert!(matches!(e, ClientError::Refused { status: 403, .. }), "{e}");
        }
    }
    let audit = f.admin(s.addr).audit().await.unwrap();
    assert_eq!(audit.iter().filter(|l| l.contains("\"refuse\"")).count(), 8);
    assert!(audit.iter().all(|l| !l.contains("\"release\"")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_releases_at_most_once() {
    let (f, s) = serving_db().await;
    let mut c = f.client(s.addr);
    let challenge = c.challenge("db").await.unwrap();
    let keys = cvm_keys::hpke::HpkeKeyPair::generate().unwrap();
    let rd = cvm_keys::binding::report_data(&challenge.nonce, keys.public_key(), b"db");
    let Evidence {
        tee,
        evidence,
        certs,
    } = Source {
        sim: simulator(),
        guest: Guest::good(TeeKind::Snp),
    }
    .evidence(&rd)
    .unwrap();
    let req = cvm_attest::protocol::AttestRequest {
        resource: "db".into(),
        nonce: challenge.nonce,
        tee,
        evidence,
        certs,
        hpke_public_key: keys.public_key().to_vec(),
    };
    let ok = c.attest(&req).await.unwrap();
    assert_eq!(
        &cvm_attest::client::open_secret(&keys, "db", &ok.secret).unwrap()[..],
        b"v"
    );
    let e = c.attest(&req).await.unwrap_err();
    assert_eq!(e.code(), Some("NONCE_REPLAYED"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_refuses_simulated_evidence() {
    let f = Fixture::new("", "");
    let s = Running::start(&f.config()).await;
    f.admin(s.addr)
        .put_secret("db", b"v", &policy())
        .await
        .unwrap();
    for guest in [
        Guest {
            send_certs: true,
            ..Guest::good(TeeKind::Snp)
        },
        Guest::good(TeeKind::Tdx),
    ] {
        let e = fetch(&f, &s, "db", guest).await.unwrap_err();
        assert_eq!(e.code(), Some("SIMULATED_NOT_ALLOWED"), "{e}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_rolled_back_to_an_older_version_is_refused_not_released() {
    let f = simulated_fixture();
    let s = Running::start(&f.config()).await;
    let mut admin = f.admin(s.addr);
    // Version 1 let guests of measurement OTHER have the secret; version 2 does not.
    let loose = format!("[snp]\nmeasurements = [\"{}\"]\n", hex::encode(OTHER));
    admin.put_secret("db", b"old value", &loose).await.unwrap();
    let record = f.path("state/secrets/db.secret");
    let old = std::fs::read(&record).unwrap();
    admin
        .put_secret("db", b"new value", &policy())
        .await
        .unwrap();
    let other = Guest {
        measurement: OTHER,
        ..Guest::good(TeeKind::Snp)
    };
    assert_eq!(
        fetch(&f, &s, "db", other).await.unwrap_err().code(),
        Some("POLICY_MEASUREMENT")
    );
    s.stop().await;
    // The untrusted storage puts version 1 back, and the service restarts.
    std::fs::write(&record, &old).unwrap();
    let s = Running::start(&f.config()).await;
    for guest in [other, Guest::good(TeeKind::Snp)] {
        let e = fetch(&f, &s, "db", guest).await.unwrap_err();
        let ClientError::Refused {
            status,
            code,
            message,
        } = &e
        else {
            panic!("{e}");
        };
        assert_eq!((*status, code.as_str()), (500, "INTERNAL"), "{e}");
        assert!(
            !message.contains("secrets/") && !message.contains("db.secret"),
            "{message}"
        );
    }
    let audit = f.admin(s.addr).audit().await.unwrap();
    assert!(
        audit.iter().all(|l| !l.contains("\"release\"")),
        "{audit:?}"
    );
    // Storing the secret again replaces the rolled-back record.
    f.admin(s.addr)
        .put_secret("db", b"new value", &policy())
        .await
        .unwrap();
    assert_eq!(
        fetch(&f, &s, "db", Guest::good(TeeKind::Snp))
            .await
            .unwrap(),
        b"new value"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_releases_nothing_to_a_tee_whose_measurement_it_leaves_open() {
    let f = simulated_fixture();
    let s = Running::start(&f.config()).await;
    let mut admin = f.admin(s.addr);
    let snp_only = format!("[snp]\nmeasurements = [\"{}\"]\n", hex::encode(MEASUREMENT));
    admin.put_secret("snp-only", b"v", &snp_only).await.unwrap();
    admin
        .put_secret("anyone", b"any", "allow_any_measurement = true\n")
        .await
        .unwrap();
    assert_eq!(
        fetch(&f, &s, "snp-only", Guest::good(TeeKind::Snp))
            .await
            .unwrap(),
        b"v"
    );
    let e = fetch(&f, &s, "snp-only", Guest::good(TeeKind::Tdx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("POLICY_MEASUREMENT"), "{e}");
    assert!(e.to_string().contains("[tdx] mrtd"), "{e}");
    for tee in [TeeKind::Snp, TeeKind::Tdx] {
        let guest = Guest {
            measurement: OTHER,
            ..Guest::good(tee)
        };
        assert_eq!(fetch(&f, &s, "anyone", guest).await.unwrap(), b"any");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_resource_is_named_only_to_a_guest_that_attested() {
    let (f, s) = serving_db().await;
    for tee in [TeeKind::Snp, TeeKind::Tdx] {
        // Genuine, bound evidence: now the service says there is no such secret.
        let e = fetch(&f, &s, "nope", Guest::good(tee)).await.unwrap_err();
        assert_eq!(e.code(), Some("UNKNOWN_RESOURCE"), "{e}");
        // Tampered evidence: the same refusal for a known and an unknown name.
        let tampered = Guest {
            tamper: true,
            ..Guest::good(tee)
        };
        let known = fetch(&f, &s, "db", tampered).await.unwrap_err();
        let unknown = fetch(&f, &s, "nope", tampered).await.unwrap_err();
        assert_eq!(known.code(), unknown.code(), "{known} / {unknown}");
    }
    s.stop().await;
}
