//! `cvm-attest serve` replicas (the real binary) on one real PostgreSQL: a throwaway cluster from the
//! machine's PostgreSQL per test (`initdb` in a temporary directory, run as `nobody` when the tests run as
//! root, a Unix socket; stopped and removed at the end). Without PostgreSQL every test prints a skip line.
//!
//! Checked: challenges and spent nonces shared by the replicas, admin writes seen at once everywhere, a
//! replica killed with -9 under 64 clients, the database stopped and restarted under load, and rows edited
//! in the database detected, never trusted; TLS (verify-full) with a password file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_common;

use cvm_attest::client::{Client, ClientError, Evidence, EvidenceSource, tls_config};
use cvm_attest::protocol::{AttestRequest, TeeKind};
use cvm_attest::sim::SnpRequest;
use cvm_attest::store::postgres::cluster::{self, Cluster};
use serve_common::{Fixture, Process, sim_dir, simulator};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MEASUREMENT: [u8; 48] = [0x5a; 48];
const OTHER: [u8; 48] = [0x33; 48];
const DB: &str = "cvm";

/// A cluster for one test, or `None` (and a skip line) where PostgreSQL is not installed.
fn cluster(test: &str, options: &cluster::Options) -> Option<Cluster> {
    if cluster::find_bin().is_none() {
        eprintln!(
            "skipped {test}: PostgreSQL not found (apt-get install postgresql, or set CVM_PG_BIN)"
        );
        return None;
    }
    let c = Cluster::start(options).unwrap();
    c.create_database(DB).unwrap();
    Some(c)
}

/// Simulated SNP evidence of a guest with `measurement`.
struct Guest([u8; 48]);

impl EvidenceSource for Guest {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, String> {
        let evidence = simulator()
            .amd
            .snp_report(&SnpRequest {
                report_data: *report_data,
                measurement: self.0,
                ..SnpRequest::default()
            })
            .map_err(|e| e.to_string())?;
        Ok(Evidence {
            tee: TeeKind::Snp,
            evidence,
            certs: Vec::new(),
        })
    }
}

fn policy(m: &[u8; 48]) -> String {
    format!("[snp]\nmeasurements = [\"{}\"]\n", hex::encode(m))
}

/// The files of a deployment: PKI, KEK, and a configuration naming the database.
type Deployment = Fixture;

fn deployment(url: &str, extra: &str) -> Deployment {
    Fixture::with_store(
        &format!(
            "mode = \"simulated\"\nsim_dir = \"{}\"",
            sim_dir().join("sim").display()
        ),
        &format!(
            "[store]\nbackend = \"postgres\"\nkek_file = \"kek\"\n[store.postgres]\nurl = \"{url}\"\n\
             connect_timeout_secs = 2\nstatement_timeout_secs = 2\n{extra}\n"
        ),
        "[limits]\nmax_connections_per_address = 1024\nconnection_rate_per_address = 100000\n\
         connection_burst_per_address = 100000\n",
    )
}

/// `cvm-attest admin ... audit --verify` against `addr`: exit status and output.
fn audit_verify_cli(d: &Deployment, addr: SocketAddr) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cvm-attest"))
        .args(["admin", "--server", &format!("https://{addr}"), "--ca"])
        .arg(d.path("pki/ca.pem"))
        .arg("--cert")
        .arg(d.path("pki/admin.pem"))
        .arg("--key")
        .arg(d.path("pki/admin.key"))
        .args(["audit", "--verify"])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A replica: the real binary, its stderr kept.
type Replica = Process;

fn kill9(r: &mut Replica) {
    r.child.kill().unwrap();
    r.child.wait().unwrap();
}

/// `n` replicas started at once (they apply the schema together).
fn replicas(d: &Deployment, n: usize) -> Vec<Replica> {
    let config = d.path("config.toml");
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || Replica::try_start(&config))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap_or_else(|log| panic!("{log}")))
        .collect()
}

/// A challenge from `client` and the attest request a guest with `measurement` makes for it.
async fn request(
    client: &mut Client,
    resource: &str,
    measurement: [u8; 48],
) -> Result<(AttestRequest, cvm_keys::hpke::HpkeKeyPair), ClientError> {
    let challenge = client.challenge(resource).await?;
    let keys = cvm_keys::hpke::HpkeKeyPair::generate().unwrap();
    let rd =
        cvm_keys::binding::report_data(&challenge.nonce, keys.public_key(), resource.as_bytes());
    let e = Guest(measurement).evidence(&rd).unwrap();
    Ok((
        AttestRequest {
            resource: resource.into(),
            nonce: challenge.nonce,
            tee: e.tee,
            evidence: e.evidence,
            certs: e.certs,
            hpke_public_key: keys.public_key().to_vec(),
        },
        keys,
    ))
}

/// The value `client` is released for `req`.
async fn attest(
    client: &mut Client,
    req: &AttestRequest,
    keys: &cvm_keys::hpke::HpkeKeyPair,
) -> Result<Vec<u8>, ClientError> {
    let resp = client.attest(req).await?;
    Ok(cvm_attest::client::open_secret(keys, &req.resource, &resp.secret)?.to_vec())
}

fn code(r: Result<Vec<u8>, ClientError>) -> String {
    r.err()
        .and_then(|e| e.code().map(str::to_owned))
        .unwrap_or_else(|| "released".into())
}

/// The nonce identity the audit records carry.
fn nonce_id(req: &AttestRequest) -> String {
    hex::encode(&req.nonce[..16])
}

/// Every attest record in the database: (verdict, nonce id).
fn audited(c: &Cluster) -> Vec<(String, Option<String>)> {
    c.psql(
        DB,
        "SELECT record::json->>'verdict', coalesce(record::json->>'nonce', '') FROM cvm_audit \
         WHERE record::json->>'event' = 'attest' ORDER BY seq",
    )
    .unwrap()
    .lines()
    .map(|l| {
        let (v, n) = l.split_once('|').unwrap();
        (v.to_owned(), (!n.is_empty()).then(|| n.to_owned()))
    })
    .collect()
}

/// Released nonces in the audit log: each at most once, and every one the clients saw is there.
fn check_releases_audited(c: &Cluster, seen: &HashSet<String>) {
    let mut released: HashMap<String, usize> = HashMap::new();
    for (verdict, nonce) in audited(c) {
        if verdict == "release" {
            *released.entry(nonce.unwrap()).or_default() += 1;
        }
    }
    let twice: Vec<_> = released.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "nonces released twice: {twice:?}");
    for n in seen {
        assert!(
            released.contains_key(n),
            "a release the client got has no audit record: {n}"
        );
    }
    // Each spent nonce is one row.
    let rows: usize = c
        .psql(DB, "SELECT count(*) - count(DISTINCT id) FROM cvm_nonces")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_challenges_spent_nonces_and_the_token_key() {
    let Some(c) = cluster("three_replicas", &cluster::Options::default()) else {
        return;
    };
    let d = deployment(&c.socket_url(DB), "");
    let r = replicas(&d, 3);
    // Started together on an empty database: the schema was applied once.
    assert_eq!(
        c.psql(DB, "SELECT count(*) FROM cvm_schema")
            .unwrap()
            .trim(),
        "1"
    );
    d.admin(r[0].addr)
        .put_secret("db", b"shared secret", &policy(&MEASUREMENT))
        .await
        .unwrap();
    let mut clients: Vec<Client> = r.iter().map(|x| d.client(x.addr)).collect();
    let key = clients[0].token_key().await.unwrap();
    for client in &mut clients[1..] {
        assert_eq!(client.token_key().await.unwrap(), key);
    }
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let (req, keys) = request(&mut clients[from], "db", MEASUREMENT)
            .await
            .unwrap();
        let resp = clients[to].attest(&req).await.unwrap();
        let value = cvm_attest::client::open_secret(&keys, "db", &resp.secret).unwrap();
        assert_eq!(&value[..], b"shared secret");
        // The token is signed with the one key every replica publishes.
        cvm_attest::token::verify(&resp.token, &key).unwrap();
        // The same nonce on every replica, the one that accepted it included: refused.
        for client in &mut clients {
            assert_eq!(code(attest(client, &req, &keys).await), "NONCE_REPLAYED");
        }
    }
    // Every replica reports the database reachable.
    for client in &mut clients {
        assert_eq!(client.healthz().await.unwrap(), 200);
    }
    assert!(r[0].log().contains("schema version 1"), "{}", r[0].log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_write_on_one_replica_is_seen_by_the_others_at_once() {
    let Some(c) = cluster("admin_writes", &cluster::Options::default()) else {
        return;
    };
    let d = deployment(&c.socket_url(DB), "");
    let r = replicas(&d, 3);
    let mut admins: Vec<Client> = r.iter().map(|x| d.admin(x.addr)).collect();
    let mut clients: Vec<Client> = r.iter().map(|x| d.client(x.addr)).collect();
    for round in 0..3 {
        let (a, b, c2) = (round % 3, (round + 1) % 3, (round + 2) % 3);
        // Stored on a: b answers with it, c releases it.
        let value = format!("value {round}");
        let stored = admins[a]
            .put_secret("db", value.as_bytes(), &policy(&MEASUREMENT))
            .await
            .unwrap();
        let info = admins[b].get_secret_info("db").await.unwrap();
        assert_eq!(
            (info.policy_id, info.value_len),
            (stored.policy_id, stored.value_len)
        );
        let (req, keys) = request(&mut clients[c2], "db", MEASUREMENT).await.unwrap();
        assert_eq!(
            attest(&mut clients[c2], &req, &keys).await.unwrap(),
            value.as_bytes()
        );
        // A new policy stored on b: a refuses the old measurement at once.
        admins[b]
            .put_secret("db", value.as_bytes(), &policy(&OTHER))
            .await
            .unwrap();
        let (req, keys) = request(&mut clients[a], "db", MEASUREMENT).await.unwrap();
        assert_eq!(
            code(attest(&mut clients[a], &req, &keys).await),
            "POLICY_MEASUREMENT"
        );
        // Deleted on c: no replica releases it.
        admins[c2].delete_secret("db").await.unwrap();
        for i in 0..3 {
            let e = admins[i].get_secret_info("db").await.unwrap_err();
            assert_eq!(e.code(), Some("UNKNOWN_RESOURCE"));
            assert!(admins[i].list_secrets().await.unwrap().is_empty());
            let (req, keys) = request(&mut clients[i], "db", OTHER).await.unwrap();
            assert_eq!(
                code(attest(&mut clients[i], &req, &keys).await),
                "UNKNOWN_RESOURCE"
            );
        }
    }
}

/// What the load's clients saw.
#[derive(Default)]
struct Seen {
    /// Nonce ids of releases.
    released: Mutex<HashSet<String>>,
    /// Releases per replica index.
    per_replica: Mutex<HashMap<usize, u64>>,
    /// Refusals and errors by code ("io" for transport errors).
    codes: Mutex<HashMap<String, u64>>,
    /// Nonces accepted twice by a race to two replicas.
    doubled: AtomicU64,
}

impl Seen {
    fn releases(&self) -> usize {
        self.released.lock().unwrap().len()
    }

    fn count(&self, code: &str) -> u64 {
        self.codes
            .lock()
            .unwrap()
            .get(code)
            .copied()
            .unwrap_or_default()
    }
}

/// Clients doing flows across `addrs` until `stop`: client `i` asks replica `i` for the challenge and the
/// next one for the attestation; every third flow sends the same attestation to two replicas at once. A
/// replica that no longer answers is skipped from then on.
fn load(
    d: &Deployment,
    addrs: &[SocketAddr],
    clients: usize,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ca = d.path("pki/ca.pem");
    (0..clients)
        .map(|i| {
            let addrs = addrs.to_vec();
            let seen = seen.clone();
            let stop = stop.clone();
            let tls = tls_config(&ca, None).unwrap();
            tokio::spawn(async move {
                let n = addrs.len();
                let mut conns: Vec<Client> = addrs
                    .iter()
                    .map(|a| Client::new(&format!("https://{a}"), tls.clone()).unwrap())
                    .collect();
                let mut dead = vec![false; n];
                let mut flow = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    flow += 1;
                    let pick = |k: usize, dead: &[bool]| {
                        (0..n).map(|j| (k + j) % n).find(|&j| !dead[j]).unwrap_or(0)
                    };
                    let a = pick(i + flow, &dead);
                    let b = pick(a + 1, &dead);
                    let note = |code: String| {
                        *seen.codes.lock().unwrap().entry(code).or_default() += 1;
                    };
                    let (req, keys) = match request(&mut conns[a], "db", MEASUREMENT).await {
                        Ok(x) => x,
                        Err(e) => {
                            if e.code().is_none() {
                                dead[a] = true;
                            }
                            note(e.code().unwrap_or("io").to_owned());
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let race = flow.is_multiple_of(3) && a != b;
                    let results = if race {
                        let (c1, c2) = if a < b {
                            let (x, y) = conns.split_at_mut(b);
                            (&mut x[a], &mut y[0])
                        } else {
                            let (x, y) = conns.split_at_mut(a);
                            (&mut y[0], &mut x[b])
                        };
                        let (r1, r2) =
                            tokio::join!(attest(c1, &req, &keys), attest(c2, &req, &keys));
                        vec![(a, r1), (b, r2)]
                    } else {
                        vec![(b, attest(&mut conns[b], &req, &keys).await)]
                    };
                    let mut ok = 0;
                    for (at, r) in results {
                        match r {
                            Ok(v) => {
                                assert_eq!(v, b"load secret");
                                ok += 1;
                                seen.released.lock().unwrap().insert(nonce_id(&req));
                                *seen.per_replica.lock().unwrap().entry(at).or_default() += 1;
                            }
                            Err(e) => {
                                if e.code().is_none() {
                                    dead[at] = true;
                                }
                                note(e.code().unwrap_or("io").to_owned());
                            }
                        }
                    }
                    if ok > 1 {
                        seen.doubled.fetch_add(1, Ordering::Relaxed);
                    }
                    if ok == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect()
}

/// A load running on `n` replicas on the cluster's database.
struct Loaded {
    d: Deployment,
    r: Vec<Replica>,
    addrs: Vec<SocketAddr>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `n` replicas, the load's secret stored, `clients` clients running until `releases` were seen.
async fn start_load(c: &Cluster, n: usize, clients: usize, releases: usize) -> Loaded {
    let d = deployment(&c.socket_url(DB), "");
    let r = replicas(&d, n);
    d.admin(r[0].addr)
        .put_secret("db", b"load secret", &policy(&MEASUREMENT))
        .await
        .unwrap();
    let addrs: Vec<SocketAddr> = r.iter().map(|x| x.addr).collect();
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&d, &addrs, clients, seen.clone(), stop.clone());
    wait_until("the first releases", Duration::from_secs(120), || {
        seen.releases() >= releases
    })
    .await;
    Loaded {
        d,
        r,
        addrs,
        seen,
        stop,
        tasks,
    }
}

impl Loaded {
    /// Stop the clients; then no nonce was released twice, every release has its audit record, and the
    /// chain verifies through replica `i`.
    async fn finish(self, c: &Cluster, i: usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        assert_eq!(self.seen.doubled.load(Ordering::Relaxed), 0);
        let released = self.seen.released.lock().unwrap().clone();
        check_releases_audited(c, &released);
        let (ok, out) = audit_verify_cli(&self.d, self.addrs[i]);
        assert!(ok && out.starts_with("audit chain OK"), "{out}");
    }
}

async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_keep_being_served_when_a_replica_is_killed() {
    let Some(c) = cluster("replica_killed", &cluster::Options::default()) else {
        return;
    };
    let mut l = start_load(&c, 3, 64, 64).await;
    kill9(&mut l.r[0]);
    let survivors = |seen: &Seen| {
        let p = seen.per_replica.lock().unwrap();
        p.get(&1).copied().unwrap_or(0) + p.get(&2).copied().unwrap_or(0)
    };
    let before = survivors(&l.seen);
    // The others keep serving.
    wait_until(
        "64 more releases by the survivors",
        Duration::from_secs(120),
        || survivors(&l.seen) >= before + 64,
    )
    .await;
    assert!(l.seen.count("NONCE_REPLAYED") > 0, "the races were refused");
    l.finish(&c, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_and_restarted_under_load_gives_503s_then_full_service() {
    let Some(mut c) = cluster("database_restarted", &cluster::Options::default()) else {
        return;
    };
    let l = start_load(&c, 2, 8, 16).await;
    let (d, seen, addrs) = (&l.d, l.seen.clone(), l.addrs.clone());
    c.stop().unwrap();
    // Not ready while the database is down; attestations refused with 503 STORE_UNAVAILABLE.
    for a in &addrs {
        let mut client = d.client(*a);
        let mut status = 0;
        for _ in 0..100 {
            status = client.healthz().await.unwrap();
            if status == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, 503);
    }
    wait_until("STORE_UNAVAILABLE answers", Duration::from_secs(30), || {
        seen.count("STORE_UNAVAILABLE") >= 8
    })
    .await;
    let during = seen.releases();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen.releases(),
        during,
        "nothing is released while the database is down"
    );
    c.start_server().unwrap();
    // Both replicas serve again by themselves.
    let per = |i| {
        seen.per_replica
            .lock()
            .unwrap()
            .get(&i)
            .copied()
            .unwrap_or(0)
    };
    let (b0, b1) = (per(0), per(1));
    wait_until(
        "releases on both replicas after the restart",
        Duration::from_secs(60),
        || per(0) > b0 + 4 && per(1) > b1 + 4,
    )
    .await;
    for a in &addrs {
        assert_eq!(d.client(*a).healthz().await.unwrap(), 200);
    }
    l.finish(&c, 1).await;
}

/// A row's bytes as hex.
fn row_hex(c: &Cluster, sql: &str) -> String {
    c.psql(DB, sql).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_edited_in_the_database_are_detected_never_trusted() {
    let Some(c) = cluster("rows_edited", &cluster::Options::default()) else {
        return;
    };
    let d = deployment(&c.socket_url(DB), "");
    let r = replicas(&d, 2);
    let mut admin = d.admin(r[0].addr);
    let mut client = d.client(r[1].addr);
    let mut release = async |resource: &str, m: [u8; 48]| {
        let (req, keys) = request(&mut client, resource, m).await.unwrap();
        code(attest(&mut client, &req, &keys).await)
    };
    // The policy: an old record whose policy let OTHER in, put back after the policy changed.
    admin
        .put_secret("db", b"v1", &policy(&OTHER))
        .await
        .unwrap();
    let old = row_hex(
        &c,
        "SELECT encode(record, 'hex') FROM cvm_secrets WHERE name = 'db'",
    );
    admin
        .put_secret("db", b"v2", &policy(&MEASUREMENT))
        .await
        .unwrap();
    assert_eq!(release("db", MEASUREMENT).await, "released");
    c.psql(
        DB,
        &format!("UPDATE cvm_secrets SET record = decode('{old}', 'hex') WHERE name = 'db'"),
    )
    .unwrap();
    assert_eq!(release("db", OTHER).await, "INTERNAL");
    assert_eq!(release("db", MEASUREMENT).await, "INTERNAL");
    // The ciphertext: one bit flipped.
    admin
        .put_secret("db", b"v3", &policy(&MEASUREMENT))
        .await
        .unwrap();
    c.psql(
        DB,
        "UPDATE cvm_secrets SET record = set_byte(record, length(record) - 1, \
         get_byte(record, length(record) - 1) # 1) WHERE name = 'db'",
    )
    .unwrap();
    assert_eq!(release("db", MEASUREMENT).await, "INTERNAL");
    // Swapped: another secret's record under this name.
    admin
        .put_secret("db", b"v4", &policy(&MEASUREMENT))
        .await
        .unwrap();
    admin
        .put_secret("other", b"o", &policy(&MEASUREMENT))
        .await
        .unwrap();
    c.psql(
        DB,
        "UPDATE cvm_secrets SET record = (SELECT record FROM cvm_secrets WHERE name = 'other') \
         WHERE name = 'db'",
    )
    .unwrap();
    assert_eq!(release("db", MEASUREMENT).await, "INTERNAL");
    assert_eq!(release("other", MEASUREMENT).await, "released");
    // The manifest: edited, nothing is released; put back, service resumes.
    let manifest = row_hex(&c, "SELECT encode(body, 'hex') FROM cvm_manifest");
    c.psql(
        DB,
        "UPDATE cvm_manifest SET body = set_byte(body, 20, get_byte(body, 20) # 1), digest = NULL",
    )
    .unwrap();
    assert_eq!(release("other", MEASUREMENT).await, "INTERNAL");
    c.psql(
        DB,
        &format!(
            "UPDATE cvm_manifest SET body = decode('{manifest}', 'hex'), digest = sha256(decode('{manifest}', 'hex'))"
        ),
    )
    .unwrap();
    assert_eq!(release("other", MEASUREMENT).await, "released");
    for replica in &r {
        assert!(replica.log().contains("store") || replica.log().contains("listening"));
    }
    assert!(
        r[1].log().contains("is not the current one"),
        "{}",
        r[1].log()
    );
    // The audit log: whole so far; the table refuses changes; a record edited or deleted by someone who
    // can disable that (the table's owner) breaks the chain, and the check says where.
    let (ok, out) = audit_verify_cli(&d, r[0].addr);
    assert!(ok, "{out}");
    let e = c
        .psql(DB, "UPDATE cvm_audit SET record = record WHERE seq = 2")
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    c.psql(
        DB,
        "ALTER TABLE cvm_audit DISABLE TRIGGER cvm_audit_no_change; \
         UPDATE cvm_audit SET record = replace(record, '\"db\"', '\"xx\"') WHERE seq = 3; \
         DELETE FROM cvm_audit WHERE seq = 5; \
         ALTER TABLE cvm_audit ENABLE TRIGGER cvm_audit_no_change",
    )
    .unwrap();
    let (ok, out) = audit_verify_cli(&d, r[1].addr);
    assert!(!ok, "{out}");
    assert!(out.contains("audit chain BROKEN: 2 problem(s)"), "{out}");
    assert!(out.contains("record 3: its tag does not verify"), "{out}");
    assert!(out.contains("records 5 to 5 are missing"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified_and_the_password_comes_from_its_file() {
    let pki = tempfile::tempdir().unwrap();
    cvm_keys::ca::init_ca(pki.path(), &["127.0.0.1".to_string()]).unwrap();
    let options = cluster::Options {
        tls: Some((pki.path().join("server.pem"), pki.path().join("server.key"))),
    };
    let Some(c) = cluster("tls_and_password", &options) else {
        return;
    };
    let password = "correct horse battery staple";
    c.psql(DB, &format!("ALTER ROLE cvm PASSWORD '{password}'"))
        .unwrap();
    let url = format!("postgres://cvm@127.0.0.1:{}/{DB}", c.port());
    let write = |d: &Deployment, name: &str, text: &str| {
        std::fs::write(d.path(name), text).unwrap();
        std::fs::set_permissions(
            d.path(name),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    };
    let d = deployment(
        &url,
        &format!(
            "password_file = \"db-password\"\nca = \"{}\"\n",
            pki.path().join("ca.pem").display()
        ),
    );
    write(&d, "db-password", &format!("{password}\n"));
    let replica = Replica::try_start(&d.path("config.toml")).unwrap();
    d.admin(replica.addr)
        .put_secret("db", b"v", &policy(&MEASUREMENT))
        .await
        .unwrap();
    assert_eq!(d.admin(replica.addr).list_secrets().await.unwrap(), ["db"]);
    assert!(!replica.log().contains(password), "{}", replica.log());
    assert_eq!(
        c.psql(
            DB,
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                    WHERE a.application_name = 'cvm-attest' AND NOT s.ssl"
        )
        .unwrap()
        .trim(),
        "0"
    );
    // Another CA: the server's certificate is not trusted, and the replica does not start.
    let other = tempfile::tempdir().unwrap();
    cvm_keys::ca::init_ca(other.path(), &["127.0.0.1".to_string()]).unwrap();
    let d2 = deployment(
        &url,
        &format!(
            "password_file = \"db-password\"\nca = \"{}\"\n",
            other.path().join("ca.pem").display()
        ),
    );
    write(&d2, "db-password", &format!("{password}\n"));
    let log = Replica::try_start(&d2.path("config.toml")).err().unwrap();
    assert!(log.contains("certificate"), "{log}");
    // A wrong password: refused, and not printed.
    write(&d, "db-password", "wrong password\n");
    let log = Replica::try_start(&d.path("config.toml")).err().unwrap();
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(!log.contains("wrong password"), "{log}");
}

/// The grants README "Several replicas" gives a replicas' role that does not own the tables.
const GRANTS: &str = "GRANT SELECT, INSERT, UPDATE, DELETE ON cvm_manifest, cvm_secrets, cvm_nonces TO cvm_app; \
                      GRANT SELECT, INSERT ON cvm_audit, cvm_keys, cvm_schema TO cvm_app; \
                      GRANT SELECT, UPDATE ON cvm_audit_head TO cvm_app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_with_a_role_that_cannot_change_the_schema_or_the_audit_log() {
    let Some(c) = cluster("least_privilege", &cluster::Options::default()) else {
        return;
    };
    // The owner applies the schema once.
    let owner = deployment(&c.socket_url(DB), "");
    drop(replicas(&owner, 1));
    c.psql(DB, "CREATE ROLE cvm_app LOGIN").unwrap();
    c.psql(DB, GRANTS).unwrap();
    let url = c
        .socket_url(DB)
        .replace("postgres://cvm@", "postgres://cvm_app@");
    let d = deployment(&url, "");
    // A replica with another KEK does not start: every replica needs the one the store was made with.
    let log = Replica::try_start(&d.path("config.toml")).err().unwrap();
    assert!(log.contains("another KEK"), "{log}");
    std::fs::copy(owner.path("kek"), d.path("kek")).unwrap();
    let r = replicas(&d, 2);
    d.admin(r[0].addr)
        .put_secret("db", b"v", &policy(&MEASUREMENT))
        .await
        .unwrap();
    let mut client = d.client(r[1].addr);
    let (req, keys) = request(&mut client, "db", MEASUREMENT).await.unwrap();
    assert_eq!(attest(&mut client, &req, &keys).await.unwrap(), b"v");
    let (ok, out) = audit_verify_cli(&d, r[1].addr);
    assert!(ok, "{out}");
    // The role can neither disable the audit table's trigger nor rewrite it.
    let as_app = |sql: &str| {
        let out = Command::new(cluster::find_bin().unwrap().join("psql"))
            .args(["-X", "-q", "-At", "-h"])
            .arg(c.socket_dir())
            .args([
                "-p",
                &c.port().to_string(),
                "-U",
                "cvm_app",
                "-d",
                DB,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = as_app("ALTER TABLE cvm_audit DISABLE TRIGGER cvm_audit_no_change");
    assert!(!ok && err.contains("must be owner"), "{err}");
    let (ok, err) = as_app("DELETE FROM cvm_audit");
    assert!(!ok && err.contains("permission denied"), "{err}");
}
