//! Differential test: the `sev` crate (a test oracle only) parses the same real reports to the same fields.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use cvm_attest::snp::AttestationReport;
use cvm_attest::snp::report::TcbLayout;
use sev::firmware::guest::AttestationReport as SevReport;
use sev::parser::ByteParser;

fn same_tcb(
    ours: cvm_attest::snp::TcbVersion,
    layout: TcbLayout,
    theirs: &sev::firmware::host::TcbVersion,
    what: &str,
) {
    let p = ours.parts(layout);
    assert_eq!(
        (p.fmc, p.bootloader, p.tee, p.snp, p.microcode),
        (
            theirs.fmc,
            theirs.bootloader,
            theirs.tee,
            theirs.snp,
            theirs.microcode
        ),
        "{what}"
    );
}

#[test]
fn the_sev_crate_reads_the_same_fields_from_every_real_report() {
    let vectors = snp_vectors();
    for v in &vectors {
        let ours = AttestationReport::parse(&v.report).unwrap();
        let theirs =
            SevReport::from_bytes(&v.report).unwrap_or_else(|e| panic!("{}: sev: {e}", v.id));
        let layout = if v.product == "Turin" {
            TcbLayout::Turin
        } else {
            TcbLayout::MilanGenoa
        };
        let id = &v.id;
        assert_eq!(ours.version.0, theirs.version, "{id}");
        assert_eq!(ours.guest_svn, theirs.guest_svn, "{id}");
        assert_eq!(ours.policy.0, u64::from(theirs.policy), "{id}");
        assert_eq!(ours.policy.debug(), theirs.policy.debug_allowed(), "{id}");
        assert_eq!(ours.family_id, &theirs.family_id, "{id}");
        assert_eq!(ours.image_id, &theirs.image_id, "{id}");
        assert_eq!(ours.vmpl, theirs.vmpl, "{id}");
        assert_eq!(ours.signature_algo.0, theirs.sig_algo, "{id}");
        assert_eq!(ours.platform_info.0, u64::from(theirs.plat_info), "{id}");
        assert_eq!(ours.flags.0, u32::from(theirs.key_info), "{id}");
        assert_eq!(ours.report_data, &theirs.report_data, "{id}");
        assert_eq!(ours.measurement, &theirs.measurement, "{id}");
        assert_eq!(ours.host_data, &theirs.host_data, "{id}");
        assert_eq!(ours.id_key_digest, &theirs.id_key_digest, "{id}");
        assert_eq!(ours.author_key_digest, &theirs.author_key_digest, "{id}");
        assert_eq!(ours.report_id, &theirs.report_id, "{id}");
        assert_eq!(ours.report_id_ma, &theirs.report_id_ma, "{id}");
        assert_eq!(ours.chip_id, &theirs.chip_id, "{id}");
        same_tcb(ours.current_tcb, layout, &theirs.current_tcb, "current_tcb");
        same_tcb(
            ours.reported_tcb,
            layout,
            &theirs.reported_tcb,
            "reported_tcb",
        );
        same_tcb(
            ours.committed_tcb,
            layout,
            &theirs.committed_tcb,
            "committed_tcb",
        );
        same_tcb(ours.launch_tcb, layout, &theirs.launch_tcb, "launch_tcb");
        assert_eq!(ours.cpuid.map(|c| c.family), theirs.cpuid_fam_id, "{id}");
        assert_eq!(ours.cpuid.map(|c| c.model), theirs.cpuid_mod_id, "{id}");
        assert_eq!(ours.cpuid.map(|c| c.stepping), theirs.cpuid_step, "{id}");
        let (cur, com) = (ours.current_version, ours.committed_version);
        assert_eq!(
            (cur.major, cur.minor, cur.build),
            (
                theirs.current.major,
                theirs.current.minor,
                theirs.current.build
            ),
            "{id}"
        );
        assert_eq!(
            (com.major, com.minor, com.build),
            (
                theirs.committed.major,
                theirs.committed.minor,
                theirs.committed.build
            ),
            "{id}"
        );
        assert_eq!(ours.launch_mit_vector, theirs.launch_mit_vector, "{id}");
        assert_eq!(ours.current_mit_vector, theirs.current_mit_vector, "{id}");
        assert_eq!(ours.signature.r, theirs.signature.r(), "{id}");
        assert_eq!(ours.signature.s, theirs.signature.s(), "{id}");
    }
    eprintln!(
        "sev crate cross-check: {} reports, all fields equal",
        vectors.len()
    );
}
