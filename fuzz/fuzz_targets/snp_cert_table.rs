//! Arbitrary bytes as the SNP extended report's certificate table (configfs-tsm `auxblob`, written by the
//! untrusted host): parsed, then ordered for sending. Must never panic; what parses must re-encode to a
//! table that parses to the same certificates.
#![no_main]

use cvm_agent::certtable::{CertKind, ReportSigner, encode, evidence_certs, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(certs) = parse(data) else { return };
    for signer in [
        ReportSigner::Leaf(CertKind::Vcek),
        ReportSigner::Leaf(CertKind::Vlek),
        ReportSigner::Neither("unsigned".into()),
    ] {
        let _ = evidence_certs(&certs, &signer, true);
        let _ = evidence_certs(&certs, &signer, false);
    }
    for c in &certs {
        let _ = c.kind.to_string();
    }
    match parse(&encode(&certs)) {
        Ok(again) => assert_eq!(again, certs),
        Err(e) => panic!("re-encoded table does not parse: {e}"),
    }
});
