//! The audit log's hash chain. Record number `seq` (from 1) is kept as the JSON of its fields followed by
//! `"seq"`; the line adds `"tag"`: HMAC-SHA256 under a key derived from the KEK over a label, the previous
//! record's tag (zeros before the first) and those JSON bytes. Storage that deletes, reorders or edits a
//! record, or inserts one, breaks the chain at that point, and without the KEK it cannot forge a new one:
//! [`Verifier`] finds where (`cvm-attest admin ... audit --verify`).
//!
//! What a chain cannot show by itself is the newest records cut off together: the head (last `seq` and
//! `tag`) that the check prints must be compared with one noted earlier (README "The audit log").

use super::audit::AuditRecord;
use cvm_keys::Key256;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Label of the chain key derived from the KEK.
const KEY_LABEL: &[u8] = b"cvm-attest/v1 audit chain key";
/// Label MACed before each link.
const TAG_LABEL: &[u8] = b"cvm-attest/v1 audit record";
/// What a chained line ends with after its body's fields: `,"tag":"` + 64 hex digits + `"}`.
const TAG_PREFIX: &str = ",\"tag\":\"";
const TAG_SUFFIX_LEN: usize = TAG_PREFIX.len() + 64 + 2;
/// Most problems a check reports (it counts them all).
const MAX_PROBLEMS: usize = 20;

/// A record's tag.
pub type Tag = [u8; 32];

/// The chain's key: HMAC-SHA256(KEK, label).
#[derive(Clone)]
pub struct ChainKey(hmac::Key);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// The chain key of `kek`.
    pub fn from_kek(kek: &Key256) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, kek.as_bytes()),
            KEY_LABEL,
        );
        ChainKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    fn tag(&self, prev: &Tag, body: &str) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(TAG_LABEL);
        ctx.update(prev);
        ctx.update(body.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

/// The newest record of a chain: its number and tag (`seq` 0 and zeros: no record yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Number of the record (from 1).
    pub seq: u64,
    /// Its tag.
    pub tag: Tag,
}

#[derive(Serialize)]
struct Linked<'a> {
    #[serde(flatten)]
    record: &'a AuditRecord,
    seq: u64,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Link `record` after `head`: the body the tag covers (JSON with `seq`) and the new head.
pub fn link(
    key: &ChainKey,
    head: &Head,
    record: &AuditRecord,
) -> Result<(String, Head), serde_json::Error> {
    let seq = head.seq.saturating_add(1);
    let body = serde_json::to_string(&Linked { record, seq })?;
    let tag = key.tag(&head.tag, &body);
    Ok((body, Head { seq, tag }))
}

/// The line of a linked body: the body with `"tag"` added as its last field.
pub fn line(body: &str, tag: &Tag) -> String {
    let open = body.strip_suffix('}').unwrap_or(body);
    format!("{open}{TAG_PREFIX}{}\"}}", hex::encode(tag))
}

/// A chained line's body and tag; `None` for a line without a tag (written before the chain).
pub fn split(line: &str) -> Option<(String, Tag)> {
    let cut = line.len().checked_sub(TAG_SUFFIX_LEN)?;
    let (open, suffix) = (line.get(..cut)?, line.get(cut..)?);
    let hex_tag = suffix.strip_prefix(TAG_PREFIX)?.strip_suffix("\"}")?;
    let mut tag = [0u8; 32];
    hex::decode_to_slice(hex_tag, &mut tag).ok()?;
    Some((format!("{open}}}"), tag))
}

/// The head a log ends with, from its last line (none or unchained: no record yet).
pub fn head_of(last_line: Option<&str>) -> Head {
    last_line
        .and_then(split)
        .and_then(|(body, tag)| {
            let seq = serde_json::from_str::<SeqOnly>(&body).ok()?.seq;
            Some(Head { seq, tag })
        })
        .unwrap_or_default()
}

/// What a check of the whole log found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainCheck {
    /// Chained records checked.
    pub records: u64,
    /// Lines before the first chained one (written before the chain existed).
    pub unchained: u64,
    /// The newest record.
    pub head: Head,
    /// Problems found (at most [`MAX_PROBLEMS`] described).
    pub problems: Vec<String>,
    /// How many problems there were in all.
    pub problem_count: u64,
}

/// Checks lines in order.
#[derive(Debug)]
pub struct Verifier {
    key: ChainKey,
    check: ChainCheck,
    /// The chain has started (a chained line was seen).
    started: bool,
    /// Lines seen, for messages.
    lines: u64,
}

impl Verifier {
    /// A verifier of the chain under `key`.
    pub fn new(key: ChainKey) -> Self {
        Verifier {
            key,
            check: ChainCheck::default(),
            started: false,
            lines: 0,
        }
    }

    fn problem(&mut self, message: String) {
        self.check.problem_count += 1;
        if self.check.problems.len() < MAX_PROBLEMS {
            self.check.problems.push(message);
        }
    }

    /// Check the next line.
    pub fn push(&mut self, line: &str) {
        self.lines += 1;
        let n = self.lines;
        let Some((body, tag)) = split(line) else {
            if self.started {
                self.problem(format!(
                    "line {n}: not chained (a line inserted into the log, or a chained one damaged)"
                ));
            } else {
                self.check.unchained += 1;
            }
            return;
        };
        let Ok(SeqOnly { seq }) = serde_json::from_str(&body) else {
            self.problem(format!("line {n}: not an audit record (edited)"));
            return;
        };
        let head = self.check.head;
        let expected = head.seq.saturating_add(1);
        if seq > expected {
            self.problem(format!(
                "records {expected} to {} are missing (deleted)",
                seq - 1
            ));
        } else if seq < expected {
            self.problem(format!(
                "record {seq} follows record {} (reordered or duplicated)",
                head.seq
            ));
        } else if self.key.tag(&head.tag, &body) != tag {
            self.problem(format!(
                "record {seq}: its tag does not verify (the record was edited, or the one before it)"
            ));
        }
        // Go on from this record, so that every break is reported once.
        self.started = true;
        self.check.records += 1;
        self.check.head = Head { seq, tag };
    }

    /// The result.
    pub fn finish(self) -> ChainCheck {
        self.check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> AuditRecord {
        AuditRecord {
            time: i,
            event: "attest".into(),
            resource: "db".into(),
            verdict: "release".into(),
            reason: None,
            tee: Some("snp".into()),
            measurement: None,
            simulated: true,
            peer: Some("127.0.0.1:1".into()),
            nonce: Some("00".repeat(16)),
        }
    }

    fn chain(key: &ChainKey, n: i64) -> Vec<String> {
        let mut head = Head::default();
        (1..=n)
            .map(|i| {
                let (body, next) = link(key, &head, &record(i)).unwrap();
                head = next;
                line(&body, &head.tag)
            })
            .collect()
    }

    fn check(key: &ChainKey, lines: &[String]) -> ChainCheck {
        let mut v = Verifier::new(key.clone());
        for l in lines {
            v.push(l);
        }
        v.finish()
    }

    #[test]
    fn a_chain_verifies_and_its_lines_are_audit_records() {
        let key = ChainKey::from_kek(&Key256::generate().unwrap());
        let lines = chain(&key, 5);
        let r: AuditRecord = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(r, record(3));
        let c = check(&key, &lines);
        assert_eq!((c.records, c.head.seq, c.problem_count), (5, 5, 0));
        assert_eq!(head_of(lines.last().map(String::as_str)), c.head);
        // Lines written before the chain may precede it.
        let mut with_old = vec![serde_json::to_string(&record(0)).unwrap()];
        with_old.extend(lines);
        let c = check(&key, &with_old);
        assert_eq!((c.unchained, c.records, c.problem_count), (1, 5, 0));
    }

    #[test]
    fn a_deleted_edited_reordered_inserted_or_forged_record_breaks_the_chain() {
        let key = ChainKey::from_kek(&Key256::generate().unwrap());
        let lines = chain(&key, 6);
        let mut deleted = lines.clone();
        deleted.remove(2);
        assert!(check(&key, &deleted).problems[0].contains("records 3 to 3 are missing"));
        let mut edited = lines.clone();
        edited[1] = edited[1].replace("\"release\"", "\"refuse\"");
        let c = check(&key, &edited);
        assert_eq!(c.problem_count, 1, "{:?}", c.problems);
        assert!(c.problems[0].contains("record 2: its tag does not verify"));
        let mut swapped = lines.clone();
        swapped.swap(3, 4);
        assert!(check(&key, &swapped).problem_count > 0);
        let mut inserted = lines.clone();
        inserted.insert(4, serde_json::to_string(&record(9)).unwrap());
        assert!(check(&key, &inserted).problems[0].contains("line 5: not chained"));
        // A chain made with another key (someone without the KEK rewriting the log) does not verify.
        let other = ChainKey::from_kek(&Key256::generate().unwrap());
        assert_eq!(check(&key, &chain(&other, 3)).problem_count, 3);
        // Every single-bit flip of a line is caught.
        for i in 0..lines[0].len() {
            let mut bytes = lines[0].clone().into_bytes();
            bytes[i] ^= 1;
            let Ok(flipped) = String::from_utf8(bytes) else {
                continue;
            };
            let mut l = lines.clone();
            l[0] = flipped;
            assert!(check(&key, &l).problem_count > 0, "byte {i}");
        }
    }
}
