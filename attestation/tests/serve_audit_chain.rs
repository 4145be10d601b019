//! The file store's audit log is hash-chained: `GET /v1/admin/audit/verify` (`cvm-attest admin ... audit
//! --verify`) finds a record edited, deleted or inserted in `audit.jsonl`; lines written before the chain
//! are told apart; a partial last line a crash left is dropped at start and the chain goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod serve_common;

use serve_common::{ALLOW_ALL, Fixture, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_deleted_or_inserted_audit_record_breaks_the_chain() {
    let f = Fixture::new("", "");
    let log = f.path("state/audit.jsonl");
    // A line written by a cvm-attest without the chain, and a record cut off by a crash.
    std::fs::create_dir_all(f.path("state")).unwrap();
    let legacy = "{\"time\":1,\"event\":\"secret_put\",\"resource\":\"old\",\"verdict\":\"ok\",\"reason\":null,\
                  \"tee\":null,\"measurement\":null,\"simulated\":false,\"peer\":null}\n";
    std::fs::write(&log, format!("{legacy}{{\"time\":2,\"eve")).unwrap();
    let server = Running::start(&f.config()).await;
    let mut admin = f.admin(server.addr);
    for i in 0..3 {
        admin
            .put_secret(&format!("s{i}"), b"v", ALLOW_ALL)
            .await
            .unwrap();
    }
    admin.delete_secret("s0").await.unwrap();
    let v = admin.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!((v.records, v.unchained, v.head_seq), (4, 1, 4));
    let lines = admin.audit().await.unwrap();
    assert_eq!(lines.len(), 5);
    assert!(lines[4].contains("\"seq\":4") && lines[4].contains("\"tag\":\""));
    server.stop().await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let check = async |content: String| {
        std::fs::write(&log, content).unwrap();
        let server = Running::start(&f.config()).await;
        let v = f.admin(server.addr).audit_verify().await.unwrap();
        server.stop().await;
        v
    };
    let edited = text.replacen("\"s1\"", "\"s9\"", 1);
    let v = check(edited).await;
    assert!(!v.ok);
    assert_eq!(
        v.problems,
        ["record 2: its tag does not verify (the record was edited, or the one before it)"]
    );
    let mut deleted = lines.clone();
    deleted.remove(3);
    let v = check(deleted.join("\n") + "\n").await;
    assert_eq!(v.problems, ["records 3 to 3 are missing (deleted)"]);
    let mut inserted = lines.clone();
    inserted.insert(2, legacy.trim_end());
    let v = check(inserted.join("\n") + "\n").await;
    assert!(v.problems[0].starts_with("line 3: not chained"), "{v:?}");
    // Put back as it was: whole again, and new records go on from its head.
    let server = {
        std::fs::write(&log, &text).unwrap();
        Running::start(&f.config()).await
    };
    let mut admin = f.admin(server.addr);
    admin.put_secret("s4", b"v", ALLOW_ALL).await.unwrap();
    let v = admin.audit_verify().await.unwrap();
    assert!(v.ok && v.head_seq == 5, "{v:?}");
    server.stop().await;
}
