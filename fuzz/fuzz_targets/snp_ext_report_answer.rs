//! Arbitrary bytes as the whole answer of SNP_GET_EXT_REPORT on `/dev/sev-guest`: the MSG_REPORT_RSP the
//! firmware wrote and the certificate table the untrusted host wrote, split at a point the first two bytes
//! choose. Must never panic; a report found lies inside the response after its header, every certificate
//! inside the table, and the certificates chosen for sending are among them.
#![no_main]

use cvm_agent::certtable::{ReportSigner, evidence_certs, report_signer};
use cvm_agent::sevguest::{REPORT_RESP_HEADER_LEN, parse_answer};
use libfuzzer_sys::fuzz_target;

/// Whether `part` is a run of bytes inside `whole`.
fn inside(part: &[u8], whole: &[u8]) -> bool {
    part.is_empty() || whole.windows(part.len()).any(|w| w == part)
}

fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let at = usize::from(u16::from_le_bytes(*split)).min(rest.len());
    let (resp, certs) = rest.split_at(at);
    let Ok(answer) = parse_answer(resp, certs) else {
        return;
    };
    assert!(!answer.report.is_empty());
    assert_eq!(
        &resp[REPORT_RESP_HEADER_LEN..REPORT_RESP_HEADER_LEN + answer.report.len()],
        answer.report.as_slice()
    );
    for c in &answer.certs {
        assert!(inside(&c.der, certs));
    }
    let signer = report_signer(&answer.report);
    if let Ok(sent) = evidence_certs(&answer.certs, &signer, true) {
        assert!(matches!(signer, ReportSigner::Leaf(_)));
        for der in &sent {
            assert!(answer.certs.iter().any(|c| &c.der == der));
        }
    }
});
