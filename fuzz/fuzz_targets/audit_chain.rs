//! Audit log lines as storage holds them (untrusted: a file anyone with the disk can edit, a database row)
//! → the chain's line splitter and verifier: never a panic; a split line rebuilds to one that splits the
//! same; the verifier reports at most one problem per line; and a chain linked here from the input's
//! lines, as records, verifies whole.
#![no_main]

use cvm_attest::store::AuditRecord;
use cvm_attest::store::chain::{self, ChainKey, Head, Verifier};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static ChainKey {
    static KEY: OnceLock<ChainKey> = OnceLock::new();
    KEY.get_or_init(|| ChainKey::from_kek(&cvm_keys::Key256::from_bytes([7; 32])))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    let mut verifier = Verifier::new(key().clone());
    let mut head = Head::default();
    let mut linked = Vec::new();
    for line in &lines {
        verifier.push(line);
        let _ = chain::head_of(Some(line));
        if let Some((body, tag)) = chain::split(line) {
            assert_eq!(chain::split(&chain::line(&body, &tag)), Some((body, tag)));
        }
        let record = AuditRecord {
            time: line.len() as i64,
            event: "attest".into(),
            resource: line.chars().take(40).collect(),
            verdict: "refuse".into(),
            reason: Some((*line).to_owned()),
            tee: None,
            measurement: None,
            simulated: false,
            peer: None,
            nonce: None,
        };
        let (body, next) = chain::link(key(), &head, &record).expect("a record serializes");
        head = next;
        linked.push(chain::line(&body, &head.tag));
    }
    let check = verifier.finish();
    assert!(check.problem_count <= lines.len() as u64);
    let mut again = Verifier::new(key().clone());
    for line in &linked {
        again.push(line);
    }
    let whole = again.finish();
    assert_eq!(
        (whole.problem_count, whole.records),
        (0, linked.len() as u64),
        "{:?}",
        whole.problems
    );
});
