//! The `/dev/sev-guest` and `/dev/tdx_guest` providers against in-process fakes of the kernel drivers and
//! the hosts behind them, modelled on their source (each fake names the functions it follows), with the
//! reports and quotes the simulator signs: what the provider asks reaches the device, what it returns
//! verifies (offline with the simulator's roots, and end to end through a simulated-mode service), hostile
//! host answers are refused without reading outside them, and every failure gives an error a person can act
//! on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, Service, mark_vlek_signed, sim_dir, simulator};
use cvm_agent::certtable::{CertKind, HostCert, encode};
use cvm_agent::provider::{self, Provider, ProviderOptions, TeeChoice};
use cvm_agent::retry::Backoff;
use cvm_agent::sevguest::{
    ExtReportRequest, REPORT_RESP_LEN, SevGuest, SevGuestDevice, SevIoctlError,
};
use cvm_agent::tdxguest::{
    Framing, HEADER_LEN, QuoteCmd, QuoteStatus, TDREPORT_LEN, TDREPORT_REPORTDATA, TdxDeviceError,
    TdxGuest, TdxGuestDevice, quote_header,
};
use cvm_agent::tdxioctl::QUOTE_CMDS;
use cvm_agent::unlock::{self, ServerOptions};
use cvm_attest::protocol::TeeKind;
use cvm_attest::sim::dir::Layout;
use cvm_attest::sim::{SnpRequest, TdxRequest};
use cvm_attest::snp::AttestationReport;
use cvm_attest::verify::{VerifyInputs, verify};
use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Retries without waiting (the delays are not under test).
const QUICK: Backoff = Backoff {
    attempts: 5,
    first: Duration::from_millis(1),
    max: Duration::from_millis(2),
    budget: Duration::from_secs(60),
};

const PAGE: usize = 4096;

fn errno(n: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(n)
}

// ---------------------------------------------------------------------------------------------------------
// SEV-SNP
// ---------------------------------------------------------------------------------------------------------

/// `/dev/sev-guest` as `drivers/virt/coco/sev-guest/sev-guest.c` serves SNP_GET_EXT_REPORT
/// (`snp_guest_ioctl` → `get_ext_report` → `__handle_guest_request`), the host behind it (which fills the
/// certificate buffer with its table, or asks for more pages) and the firmware (MSG_REPORT_REQ: a report
/// at the asked VMPL, or status INVALID_PARAM below the guest's own VMPL):
/// - `certs_len` not a page multiple or above the kernel's limit (`SEV_FW_BLOB_MAX_SIZE`): `EINVAL`, with
///   `exitinfo2` as `snp_guest_ioctl` preset it (0xff);
/// - the buffer is zero-filled, then, when the host's table needs more pages than given: `EIO`, VMM error
///   `SNP_GUEST_VMM_ERR_INVALID_LEN`, and `certs_len` rewritten to the pages the host asked for;
/// - otherwise the response (status, report_size, report) and the table, raw: hostile bytes stay hostile.
struct FakeSevGuest {
    guest_vmpl: u32,
    max_certs_len: usize,
    table: Vec<u8>,
    vlek_signed: bool,
    open_fails: bool,
    /// Every call: the request and `certs_len`.
    asked: Mutex<Vec<(ExtReportRequest, usize)>>,
}

fn cert(kind: CertKind, der: &[u8]) -> HostCert {
    HostCert {
        kind,
        der: der.to_vec(),
    }
}

/// The host's table with the simulator's ARK, VCEK and ASK (in that order).
fn sim_table() -> Vec<u8> {
    let amd = &simulator().amd;
    encode(&[
        cert(CertKind::Ark, amd.ark_der()),
        cert(CertKind::Vcek, amd.vcek_der()),
        cert(CertKind::Ask, amd.ask_der()),
    ])
}

impl FakeSevGuest {
    fn new(table: Vec<u8>) -> FakeSevGuest {
        FakeSevGuest {
            guest_vmpl: 0,
            max_certs_len: 16 * 1024,
            table,
            vlek_signed: false,
            open_fails: false,
            asked: Mutex::new(Vec::new()),
        }
    }

    fn asked_vmpls(&self) -> Vec<u32> {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.0.vmpl)
            .collect()
    }
}

impl SevGuestDevice for FakeSevGuest {
    fn name(&self) -> String {
        "fake-sev-guest".into()
    }

    fn get_ext_report(
        &self,
        req: &ExtReportRequest,
        resp: &mut [u8; REPORT_RESP_LEN],
        certs: &mut [u8],
    ) -> Result<(), SevIoctlError> {
        self.asked.lock().unwrap().push((*req, certs.len()));
        if self.open_fails {
            return Err(SevIoctlError::Open(std::io::ErrorKind::NotFound.into()));
        }
        let certs_len = certs.len();
        if certs_len != 0 && (certs_len > self.max_certs_len || !certs_len.is_multiple_of(PAGE)) {
            return Err(SevIoctlError::Ioctl {
                errno: libc::EINVAL,
                exitinfo2: 0xff,
                certs_len: certs_len as u32,
            });
        }
        certs.fill(0);
        let need = self.table.len().div_ceil(PAGE);
        if certs_len / PAGE < need {
            return Err(SevIoctlError::Ioctl {
                errno: libc::EIO,
                exitinfo2: 1 << 32,
                certs_len: (need * PAGE) as u32,
            });
        }
        resp.fill(0);
        if req.vmpl < self.guest_vmpl || req.vmpl > 3 {
            resp[0..4].copy_from_slice(&0x16u32.to_le_bytes());
            return Ok(());
        }
        let mut report = simulator()
            .amd
            .snp_report(&SnpRequest {
                report_data: req.user_data,
                measurement: common::MEASUREMENT,
                vmpl: req.vmpl,
                ..SnpRequest::default()
            })
            .unwrap();
        if self.vlek_signed {
            mark_vlek_signed(&mut report);
        }
        resp[4..8].copy_from_slice(&(report.len() as u32).to_le_bytes());
        resp[32..32 + report.len()].copy_from_slice(&report);
        certs[..self.table.len()].copy_from_slice(&self.table);
        Ok(())
    }
}

/// A provider on `fake` that reads the driver's `vmpck_id` from `param` (absent: unknown).
fn sev(fake: &Arc<FakeSevGuest>, param: Option<&str>) -> (SevGuest, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmpck_id");
    if let Some(v) = param {
        std::fs::write(&path, format!("{v}\n")).unwrap();
    }
    (
        SevGuest::with_device(fake.clone()).with_vmpck_params(&[path]),
        dir,
    )
}

#[test]
fn sev_guest_report_data_and_vmpl_reach_the_device_and_the_report_verifies() {
    let fake = Arc::new(FakeSevGuest::new(sim_table()));
    let (p, _d) = sev(&fake, Some("0"));
    let p = p.with_vmpl(1);
    assert!(p.describe().contains("fake-sev-guest"), "{}", p.describe());
    let rd = [0x42; 64];
    let ev = p.evidence(&rd).unwrap();
    let asked = fake.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0.user_data, rd);
    assert_eq!(asked[0].0.vmpl, 1);
    // One call with the kernel's whole 16 KiB certificate buffer.
    assert_eq!(asked[0].1, 16 * 1024);
    assert_eq!(ev.tee, TeeKind::Snp);
    // VCEK first, then ASK and ARK, whatever the host's table order.
    let amd = &simulator().amd;
    assert_eq!(
        ev.certs,
        vec![
            amd.vcek_der().to_vec(),
            amd.ask_der().to_vec(),
            amd.ark_der().to_vec()
        ]
    );
    let verdict = verify(
        &ev.evidence,
        None,
        &VerifyInputs {
            certs: ev.certs.clone(),
            trust_roots: Some(vec![amd.ark_der().to_vec()]),
            at: now(),
            allow_simulated: true,
            ..VerifyInputs::default()
        },
    )
    .unwrap();
    assert!(verdict.accepted(), "{}", verdict.human());
    assert!(verdict.simulated);
    assert_eq!(verdict.claims["vmpl"], 1);
    assert_eq!(verdict.claims["report_data"], hex::encode(rd));
    assert_eq!(
        verdict.claims["measurement"],
        hex::encode(common::MEASUREMENT)
    );
}

#[test]
fn sev_guest_evidence_attests_end_to_end_with_its_vcek() {
    let f = Fixture::new("127.0.0.1:0");
    let s = Service::start(&f);
    s.put(&f, "db", b"from sev-guest");
    let (p, _d) = sev(&Arc::new(FakeSevGuest::new(sim_table())), None);
    let opts = ServerOptions::new(&s.url(), &f.ca(), "db");
    assert!(opts.send_certs);
    let secret = rt().block_on(unlock::fetch(&opts, Arc::new(p))).unwrap();
    assert_eq!(&secret[..], b"from sev-guest");
}

/// One table entry: GUID (canonical bytes), offset, length.
fn entry(kind: CertKind, offset: u32, length: u32) -> Vec<u8> {
    let mut e = kind.guid().to_vec();
    e.extend_from_slice(&offset.to_le_bytes());
    e.extend_from_slice(&length.to_le_bytes());
    e
}

#[test]
fn a_hostile_certificate_table_is_refused_without_reading_past_the_buffer() {
    // The host writes the table: offsets and lengths that point outside the 16 KiB buffer, wrap around in
    // 32 bits (as the kernel's own `ent->offset + ent->length` in `sev_report_new` does), or never end.
    let terminator = [0u8; 24];
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "offset + length wraps",
            [
                entry(CertKind::Vcek, 0xffff_fff0, 0x20),
                terminator.to_vec(),
            ]
            .concat(),
        ),
        (
            "runs past the buffer",
            [entry(CertKind::Vcek, 16_000, 1_000), terminator.to_vec()].concat(),
        ),
        (
            "length u32::MAX",
            [entry(CertKind::Vcek, 48, u32::MAX), terminator.to_vec()].concat(),
        ),
        (
            "offset past the end",
            [entry(CertKind::Ask, 1 << 20, 1), terminator.to_vec()].concat(),
        ),
        (
            "no terminator",
            (0..600).flat_map(|_| entry(CertKind::Ark, 0, 24)).collect(),
        ),
    ];
    for (what, table) in hostile {
        let fake = Arc::new(FakeSevGuest::new(table));
        let (p, _d) = sev(&fake, Some("0"));
        for required in [true, false] {
            let e = p
                .clone()
                .with_certs_required(required)
                .evidence(&[0; 64])
                .unwrap_err()
                .to_string();
            assert!(e.contains("the host's certificate table"), "{what}: {e}");
        }
    }
    // In bounds (pointing into the zero padding after the table) is only zeros, not an error.
    let padding = [entry(CertKind::Vcek, 8_000, 16), terminator.to_vec()].concat();
    let (p, _d) = sev(&Arc::new(FakeSevGuest::new(padding)), Some("0"));
    let ev = p.evidence(&[0; 64]).unwrap();
    assert_eq!(ev.certs, [vec![0u8; 16]]);
}

#[test]
fn a_table_larger_than_the_buffer_is_fetched_again_with_the_length_the_kernel_reports() {
    // Five pages of certificates: the host asks for them through SNP_GUEST_VMM_ERR_INVALID_LEN.
    let amd = &simulator().amd;
    let big = encode(&[
        cert(CertKind::Vcek, amd.vcek_der()),
        cert(CertKind::Other([7; 16]), &[0x55; 4 * PAGE]),
    ]);
    assert_eq!(big.len().div_ceil(PAGE), 5);
    // A kernel that takes larger buffers: the second call has the reported length and succeeds.
    let fake = Arc::new(FakeSevGuest {
        max_certs_len: 64 * 1024,
        ..FakeSevGuest::new(big.clone())
    });
    let (p, _d) = sev(&fake, Some("0"));
    let ev = p.evidence(&[0; 64]).unwrap();
    assert_eq!(ev.certs[0], amd.vcek_der());
    let lens: Vec<usize> = fake.asked.lock().unwrap().iter().map(|a| a.1).collect();
    assert_eq!(lens, [16 * 1024, 5 * PAGE]);
    // Today's kernels take at most 16 KiB: the second call is refused, and the message says why.
    let fake = Arc::new(FakeSevGuest::new(big));
    let (p, _d) = sev(&fake, Some("0"));
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(
        e.contains("needs 20480 bytes") && e.contains("this kernel does not take"),
        "{e}"
    );
    assert!(e.contains("--omit-certs"), "{e}");
}

#[test]
fn the_vmpl_is_the_guests_own_unless_asked() {
    // An SVSM guest at VMPL 2; the sev-guest driver uses VMPCK2 (sev_guest_probe: vmpck_id = snp_vmpl).
    let svsm = || {
        Arc::new(FakeSevGuest {
            guest_vmpl: 2,
            ..FakeSevGuest::new(sim_table())
        })
    };
    let fake = svsm();
    let (p, _d) = sev(&fake, Some("2"));
    let ev = p.evidence(&[0; 64]).unwrap();
    assert_eq!(AttestationReport::parse(&ev.evidence).unwrap().vmpl, 2);
    assert_eq!(fake.asked_vmpls(), [2]);
    // A kernel that keeps the parameter at -1 (it resolves it privately) or has none: the agent steps up
    // from 0 while the firmware answers INVALID_PARAM.
    for param in [Some("-1"), None] {
        let fake = svsm();
        let (p, _d) = sev(&fake, param);
        let ev = p.evidence(&[0; 64]).unwrap();
        assert_eq!(AttestationReport::parse(&ev.evidence).unwrap().vmpl, 2);
        assert_eq!(fake.asked_vmpls(), [0, 1, 2]);
    }
    // Asked below it: the firmware's refusal is explained, with the driver's VMPL when known.
    let fake = svsm();
    let (p, _d) = sev(&fake, Some("2"));
    let e = p.with_vmpl(1).evidence(&[0; 64]).unwrap_err().to_string();
    assert!(
        e.contains("refused a report at VMPL 1")
            && e.contains("this guest runs at VMPL 2")
            && e.contains("--vmpl"),
        "{e}"
    );
    assert_eq!(fake.asked_vmpls(), [1]);
    // Asked above it: as asked.
    let fake = svsm();
    let (p, _d) = sev(&fake, Some("2"));
    let ev = p.with_vmpl(3).evidence(&[0; 64]).unwrap();
    assert_eq!(AttestationReport::parse(&ev.evidence).unwrap().vmpl, 3);
}

#[test]
fn a_vlek_signed_report_gets_the_vlek_from_a_table_holding_both() {
    let amd = &simulator().amd;
    let table = encode(&[
        cert(CertKind::Vcek, amd.vcek_der()),
        cert(CertKind::Vlek, b"the VLEK"),
        cert(CertKind::Ask, b"the ASVK"),
        cert(CertKind::Ark, amd.ark_der()),
    ]);
    let fake = Arc::new(FakeSevGuest {
        vlek_signed: true,
        ..FakeSevGuest::new(table.clone())
    });
    let (p, _d) = sev(&fake, Some("0"));
    let ev = p.evidence(&[0; 64]).unwrap();
    assert_eq!(
        ev.certs,
        [
            b"the VLEK".to_vec(),
            b"the ASVK".to_vec(),
            amd.ark_der().to_vec()
        ]
    );
    let (p, _d) = sev(&Arc::new(FakeSevGuest::new(table)), Some("0"));
    assert_eq!(p.evidence(&[0; 64]).unwrap().certs[0], amd.vcek_der());
}

#[test]
fn sev_guest_failures_say_what_to_do() {
    let amd = &simulator().amd;
    // No VCEK from the host: an error naming what came and the two ways out...
    let no_vcek = encode(&[
        cert(CertKind::Ask, amd.ask_der()),
        cert(CertKind::Ark, amd.ark_der()),
    ]);
    let (p, _d) = sev(&Arc::new(FakeSevGuest::new(no_vcek)), Some("0"));
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(e.contains("no VCEK") && e.contains("ASK, ARK"), "{e}");
    assert!(
        e.contains("snphost import") && e.contains("--omit-certs"),
        "{e}"
    );
    // ...unless the certificates are optional: the report goes alone.
    let ev = p.with_certs_required(false).evidence(&[0; 64]).unwrap();
    assert!(ev.certs.is_empty());
    assert_eq!(ev.evidence.len(), 1184);
    // No table at all (the host installed none): the buffer stays zero, an empty table.
    let (p, _d) = sev(&Arc::new(FakeSevGuest::new(Vec::new())), Some("0"));
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(e.contains("certificate table: empty"), "{e}");

    let (p, _d) = sev(
        &Arc::new(FakeSevGuest {
            open_fails: true,
            ..FakeSevGuest::new(sim_table())
        }),
        Some("0"),
    );
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(
        e.contains("open fake-sev-guest") && e.contains("are we root"),
        "{e}"
    );

    // A VMPL an SNP guest does not have never reaches the device.
    let fake = Arc::new(FakeSevGuest::new(sim_table()));
    let (p, _d) = sev(&fake, Some("0"));
    let e = p.with_vmpl(4).evidence(&[0; 64]).unwrap_err().to_string();
    assert!(e.contains("VMPL 4") && e.contains("0 to 3"), "{e}");
    assert!(fake.asked.lock().unwrap().is_empty());
}

#[test]
fn the_real_sev_guest_device_explains_its_absence() {
    if std::path::Path::new("/dev/sev-guest").exists() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: /dev/sev-guest exists here (an SNP guest); this checks the message without it"
        );
        return;
    }
    let e = SevGuest::new().evidence(&[0; 64]).unwrap_err().to_string();
    assert!(e.contains("open /dev/sev-guest"), "{e}");
    assert!(e.contains("SNP guest with the sev-guest driver"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------
// TDX
// ---------------------------------------------------------------------------------------------------------

/// A QGS message header (`qgs_msg_header_t`: u16 major, u16 minor, u32 type, u32 size, u32 error_code).
fn qgs_header(kind: u32, size: usize, code: u32) -> Vec<u8> {
    let mut h = 1u16.to_le_bytes().to_vec();
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&kind.to_le_bytes());
    h.extend_from_slice(&(size as u32).to_le_bytes());
    h.extend_from_slice(&code.to_le_bytes());
    h
}

/// An error code of `qgs_msg_lib.h`'s `QGS_MSG_ERROR_*` kind.
const QGS_MSG_ERROR: u32 = 0x0001_2001;

/// Intel's Quote Generation Service for one GET_QUOTE_REQ (without the length prefix): the checks of
/// `qgs_msg_inflate_get_quote_req`, then the QE, which takes only a TDREPORT; the answer is
/// `qgs_msg_gen_get_quote_resp` (or `qgs_msg_gen_error_resp`, the header and two zero sizes).
fn qgs(msg: &[u8]) -> Vec<u8> {
    let u32_at = |at: usize| {
        msg.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let error = || {
        let mut e = qgs_header(1, 24, QGS_MSG_ERROR);
        e.extend_from_slice(&[0; 8]);
        e
    };
    let (Some(version), Some(kind), Some(size), Some(code), Some(report), Some(ids)) = (
        u32_at(0),
        u32_at(4),
        u32_at(8),
        u32_at(12),
        u32_at(16),
        u32_at(20),
    ) else {
        return error();
    };
    if version & 0xffff != 1
        || kind != 0
        || size as usize != msg.len()
        || code != 0
        || report == 0
        || 24 + report as usize + ids as usize != msg.len()
        || report as usize != TDREPORT_LEN
    {
        return error();
    }
    let tdreport = &msg[24..24 + TDREPORT_LEN];
    let rd: [u8; 64] = tdreport[TDREPORT_REPORTDATA..TDREPORT_REPORTDATA + 64]
        .try_into()
        .unwrap();
    let quote = simulator()
        .intel
        .tdx_quote(&TdxRequest {
            report_data: rd,
            mrtd: common::MEASUREMENT,
            ..TdxRequest::default()
        })
        .unwrap();
    let mut resp = qgs_header(1, 24 + quote.len(), 0);
    resp.extend_from_slice(&0u32.to_le_bytes());
    resp.extend_from_slice(&(quote.len() as u32).to_le_bytes());
    resp.extend_from_slice(&quote);
    resp
}

/// The host behind GetQuote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    /// Upstream QEMU (`tdx_handle_get_quote`, `tdx_generate_quote`, `tdx_get_quote_read` in
    /// `target/i386/kvm/tdx*.c`): wraps the `in_len` bytes in a GET_QUOTE_REQ for the QGS, checks the answer
    /// (error code 0, no selected id, quote_size filling it) and writes back the bare quote; any failure is
    /// status ERROR with `out_len` 0.
    UpstreamQemu,
    /// Intel's QEMU of the TDX 1.0 era (`tdx_handle_get_quote_connected`): sends the `in_len` bytes to the
    /// QGS as they are and writes back what it answers. The QGS reads a 4-byte big-endian length and that
    /// many bytes; a request that is not so framed gets no answer, which the VMM reports as success with
    /// `out_len` 0.
    IntelRelay,
    /// The QGS is not reachable: status SERVICE_UNAVAILABLE.
    Unavailable,
    /// Claims a quote as long as the whole buffer.
    Overlong,
    /// A QGS answer whose quote_size runs past the message.
    HostileQgs,
    /// A QGS that refuses every report: upstream QEMU's status ERROR.
    Refusing,
}

impl Host {
    /// The status and the bytes the host writes after the header.
    fn answer(self, data: &[u8]) -> (QuoteStatus, Vec<u8>) {
        match self {
            Host::UpstreamQemu => {
                let mut req = qgs_header(0, 24 + data.len(), 0);
                req.extend_from_slice(&(data.len() as u32).to_le_bytes());
                req.extend_from_slice(&0u32.to_le_bytes());
                req.extend_from_slice(data);
                let resp = qgs(&req);
                let code = u32::from_le_bytes(resp[12..16].try_into().unwrap());
                let id = u32::from_le_bytes(resp[16..20].try_into().unwrap());
                let quote = u32::from_le_bytes(resp[20..24].try_into().unwrap()) as usize;
                if code != 0 || id != 0 || quote != resp.len() - 24 {
                    return (QuoteStatus::ERROR, Vec::new());
                }
                (QuoteStatus::SUCCESS, resp[24..].to_vec())
            }
            Host::IntelRelay => {
                let framed = data
                    .get(..4)
                    .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize);
                if framed != Some(data.len().saturating_sub(4)) {
                    return (QuoteStatus::SUCCESS, Vec::new());
                }
                let resp = qgs(&data[4..]);
                let mut out = (resp.len() as u32).to_be_bytes().to_vec();
                out.extend_from_slice(&resp);
                (QuoteStatus::SUCCESS, out)
            }
            Host::Unavailable => (QuoteStatus::SERVICE_UNAVAILABLE, Vec::new()),
            Host::Refusing => (QuoteStatus::ERROR, Vec::new()),
            Host::Overlong => (QuoteStatus::SUCCESS, vec![0xab; 8]),
            Host::HostileQgs => {
                let mut resp = qgs_header(1, 24 + 16, 0);
                resp.extend_from_slice(&0u32.to_le_bytes());
                resp.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
                resp.extend_from_slice(&[0x41; 16]);
                let mut out = (resp.len() as u32).to_be_bytes().to_vec();
                out.extend_from_slice(&resp);
                (QuoteStatus::SUCCESS, out)
            }
        }
    }
}

/// What the fake driver answers before the host is asked.
#[derive(Clone, Copy, Debug)]
enum Transient {
    Errno(i32),
    /// The call returns with the VMM still holding the request.
    InFlight,
}

/// A TDX guest driver with GetQuote (Intel's TDX guest kernels; mainline's `tdx_guest_ioctl` knows only
/// TDX_CMD_GET_REPORT0 and answers anything else with `ENOTTY`): it knows the command numbers in `known`,
/// answers others with `unknown_errno`, hands the GetQuote buffer to `host`, and first answers with the
/// queued transient errors.
struct FakeTdxGuest {
    known: Vec<u64>,
    unknown_errno: i32,
    host: Host,
    transient: Mutex<VecDeque<Transient>>,
    /// The REPORT_DATA of every TDREPORT asked for.
    reports: Mutex<Vec<[u8; 64]>>,
    /// Every GetQuote call: the command number and the framing of its request.
    asked: Mutex<Vec<(u64, Framing)>>,
}

impl FakeTdxGuest {
    fn new(known: &[u64], host: Host) -> Arc<Self> {
        Arc::new(FakeTdxGuest {
            known: known.to_vec(),
            unknown_errno: libc::ENOTTY,
            host,
            transient: Mutex::new(VecDeque::new()),
            reports: Mutex::new(Vec::new()),
            asked: Mutex::new(Vec::new()),
        })
    }

    fn asked(&self) -> Vec<(u64, Framing)> {
        self.asked.lock().unwrap().clone()
    }
}

const DCAP: u64 = 0x8010_5404;
const V3: u64 = 0xc010_5404;
const LKML: u64 = 0x8010_5402;
const GO_TDX_GUEST: u64 = 0xc010_5402;

impl TdxGuestDevice for FakeTdxGuest {
    fn name(&self) -> String {
        "fake-tdx_guest".into()
    }

    fn get_report0(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TdxDeviceError> {
        self.reports.lock().unwrap().push(*report_data);
        // A TDREPORT: REPORTMACSTRUCT with REPORTDATA at 128; the rest does not matter to the fake QE.
        let mut r = vec![0xee; TDREPORT_LEN];
        r[TDREPORT_REPORTDATA..TDREPORT_REPORTDATA + 64].copy_from_slice(report_data);
        Ok(r)
    }

    fn get_quote(&self, cmd: &QuoteCmd, buf: &mut [u8]) -> Result<(), TdxDeviceError> {
        let ioctl = |n| TdxDeviceError::Ioctl {
            cmd: cmd.name,
            path: self.name().into(),
            source: errno(n),
        };
        let h = quote_header(buf).unwrap();
        assert_eq!((h.version, h.status.0, h.out_len), (1, 0, 0));
        let data = buf[HEADER_LEN..HEADER_LEN + h.in_len as usize].to_vec();
        let framing = if data.len() == TDREPORT_LEN {
            Framing::Raw
        } else {
            Framing::Qgs
        };
        self.asked.lock().unwrap().push((cmd.number, framing));
        if !self.known.contains(&cmd.number) {
            return Err(ioctl(self.unknown_errno));
        }
        match self.transient.lock().unwrap().pop_front() {
            Some(Transient::Errno(n)) => return Err(ioctl(n)),
            Some(Transient::InFlight) => {
                buf[8..16].copy_from_slice(&QuoteStatus::IN_FLIGHT.0.to_le_bytes());
                return Ok(());
            }
            None => {}
        }
        let (status, out) = self.host.answer(&data);
        let out_len = if self.host == Host::Overlong {
            buf.len() as u32
        } else {
            out.len() as u32
        };
        buf[8..16].copy_from_slice(&status.0.to_le_bytes());
        buf[20..24].copy_from_slice(&out_len.to_le_bytes());
        buf[HEADER_LEN..HEADER_LEN + out.len()].copy_from_slice(&out);
        Ok(())
    }
}

fn tdx(fake: &Arc<FakeTdxGuest>) -> TdxGuest {
    TdxGuest::with_device(fake.clone()).with_backoff(QUICK)
}

/// Checks that `quote` is the simulator's quote over `rd`.
fn assert_quote_verifies(quote: &[u8], rd: &[u8; 64]) {
    let verdict = verify(
        quote,
        None,
        &VerifyInputs {
            trust_roots: Some(vec![simulator().intel.root_der().to_vec()]),
            collateral: Some(Layout::new(&sim_dir().join("sim")).collateral()),
            at: now(),
            allow_simulated: true,
            ..VerifyInputs::default()
        },
    )
    .unwrap();
    assert!(verdict.accepted(), "{}", verdict.human());
    assert_eq!(verdict.claims["report_data"], hex::encode(rd));
    assert_eq!(verdict.claims["mrtd"], hex::encode(common::MEASUREMENT));
}

#[test]
fn an_upstream_qemu_host_gets_the_raw_tdreport_on_go_tdx_guests_number() {
    // A driver that knows only _IOWR('T', 2, 16) and answers EINVAL to the others: EINVAL means "not this
    // command", so the search goes on to it.
    let fake = Arc::new(FakeTdxGuest {
        unknown_errno: libc::EINVAL,
        ..Arc::into_inner(FakeTdxGuest::new(&[GO_TDX_GUEST], Host::UpstreamQemu)).unwrap()
    });
    let rd = [0x24; 64];
    let ev = tdx(&fake).evidence(&rd).unwrap();
    assert_eq!(*fake.reports.lock().unwrap(), vec![rd]);
    assert_eq!(ev.tee, TeeKind::Tdx);
    assert!(ev.certs.is_empty());
    assert_quote_verifies(&ev.evidence, &rd);
    assert_eq!(
        fake.asked(),
        [
            (DCAP, Framing::Qgs),
            (V3, Framing::Raw),
            (LKML, Framing::Raw),
            (GO_TDX_GUEST, Framing::Raw)
        ]
    );

    // End to end through the service.
    let f = Fixture::new("127.0.0.1:0");
    let s = Service::start(&f);
    s.put(&f, "db", b"from tdx_guest");
    let opts = ServerOptions::new(&s.url(), &f.ca(), "db");
    let secret = rt()
        .block_on(unlock::fetch(&opts, Arc::new(tdx(&fake))))
        .unwrap();
    assert_eq!(&secret[..], b"from tdx_guest");
}

#[test]
fn intels_relaying_host_gets_a_qgs_request_on_dcaps_number_and_its_answer_is_unwrapped() {
    let fake = FakeTdxGuest::new(&[DCAP], Host::IntelRelay);
    let rd = [0x31; 64];
    let ev = tdx(&fake).evidence(&rd).unwrap();
    assert_quote_verifies(&ev.evidence, &rd);
    assert_eq!(fake.asked(), [(DCAP, Framing::Qgs)]);
}

#[test]
fn a_host_that_refuses_one_framing_is_asked_in_the_other() {
    // Intel's guest kernel on upstream QEMU: the QGS-framed request is wrapped again, the QE refuses it,
    // QEMU answers ERROR; the bare TDREPORT then works.
    let fake = FakeTdxGuest::new(&[DCAP], Host::UpstreamQemu);
    let rd = [0x13; 64];
    assert_quote_verifies(&tdx(&fake).evidence(&rd).unwrap().evidence, &rd);
    assert_eq!(fake.asked(), [(DCAP, Framing::Qgs), (DCAP, Framing::Raw)]);
    // The LKML driver on Intel's relaying QEMU: the QGS gets an unframed TDREPORT and does not answer;
    // the QGS-framed request then works.
    let fake = FakeTdxGuest::new(&[LKML], Host::IntelRelay);
    assert_quote_verifies(&tdx(&fake).evidence(&rd).unwrap().evidence, &rd);
    assert_eq!(
        fake.asked(),
        [
            (DCAP, Framing::Qgs),
            (V3, Framing::Raw),
            (LKML, Framing::Raw),
            (LKML, Framing::Qgs)
        ]
    );
}

#[test]
fn transient_getquote_errors_are_retried_within_bounds() {
    let fake = FakeTdxGuest::new(&[DCAP], Host::IntelRelay);
    fake.transient.lock().unwrap().extend([
        Transient::Errno(libc::EBUSY),
        Transient::Errno(libc::EINTR),
        Transient::InFlight,
        Transient::Errno(libc::ETIMEDOUT),
    ]);
    let rd = [0x77; 64];
    assert_quote_verifies(&tdx(&fake).evidence(&rd).unwrap().evidence, &rd);
    assert!(fake.transient.lock().unwrap().is_empty());
    // Busy for longer than the attempts allow: the last error, and nothing else tried meanwhile.
    let fake = FakeTdxGuest::new(&[DCAP], Host::IntelRelay);
    fake.transient
        .lock()
        .unwrap()
        .extend([Transient::Errno(libc::EAGAIN); 10]);
    let e = tdx(&fake).evidence(&rd).unwrap_err().to_string();
    assert!(e.contains("temporarily unavailable"), "{e}");
    assert_eq!(fake.transient.lock().unwrap().len(), 5);
    // Other errors are not retried.
    let fake = FakeTdxGuest::new(&[DCAP], Host::IntelRelay);
    fake.transient
        .lock()
        .unwrap()
        .extend([Transient::Errno(libc::EIO), Transient::Errno(libc::EBUSY)]);
    assert!(tdx(&fake).evidence(&rd).is_err());
    assert_eq!(fake.transient.lock().unwrap().len(), 1);
}

#[test]
fn tdx_guest_failures_say_what_to_do() {
    let e = |fake: Arc<FakeTdxGuest>| tdx(&fake).evidence(&[0; 64]).unwrap_err().to_string();
    let m = e(FakeTdxGuest::new(&[DCAP], Host::Unavailable));
    assert!(m.contains("0x8000000000000001") && m.contains("QGS"), "{m}");
    let m = e(FakeTdxGuest::new(&[DCAP], Host::Overlong));
    assert!(m.contains("runs past"), "{m}");
    let m = e(FakeTdxGuest::new(&[DCAP], Host::HostileQgs));
    assert!(
        m.contains("the QGS answer") && m.contains("quote_size"),
        "{m}"
    );
    let m = e(FakeTdxGuest::new(&[], Host::UpstreamQemu));
    assert!(
        m.contains("offers no quotes") && m.contains("configfs-tsm") && m.contains("go-tdx-guest"),
        "{m}"
    );
    // A host that takes neither framing (a QGS that refuses every report).
    let fake = FakeTdxGuest::new(&[GO_TDX_GUEST], Host::Refusing);
    let m = e(fake.clone());
    assert!(
        m.contains("neither framing") && m.contains("quote-generation-socket"),
        "{m}"
    );
    assert_eq!(
        fake.asked()[3..],
        [(GO_TDX_GUEST, Framing::Raw), (GO_TDX_GUEST, Framing::Qgs)]
    );
    let fake = FakeTdxGuest::new(&[], Host::UpstreamQemu);
    let m = TdxGuest::with_device(fake)
        .with_note("configfs-tsm was not used: configfs is not mounted")
        .evidence(&[0; 64])
        .unwrap_err()
        .to_string();
    assert!(
        m.ends_with("configfs-tsm was not used: configfs is not mounted"),
        "{m}"
    );
    // Every GetQuote number the agent knows is tried.
    assert_eq!(QUOTE_CMDS.len(), 4);
}

#[test]
fn tdx_selection_falls_back_to_the_device_and_auto_says_what_it_tried() {
    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("no-tsm");
    // configfs-tsm absent, the device present: --tee tdx and auto take the device (a stand-in here, so
    // its first quote fails with the device's own message).
    let with_device = ProviderOptions {
        tee: TeeChoice::Tdx,
        tsm_root: Some(missing.clone()),
        tdx_guest: Some("/dev/null".into()),
        ..ProviderOptions::default()
    };
    let p = provider::select(&with_device).unwrap();
    assert_eq!(p.describe(), "tdx via /dev/null (GetQuote)");
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(e.contains("TDX_CMD_GET_REPORT0 on /dev/null"), "{e}");
    if !std::path::Path::new("/dev/sev-guest").exists() {
        let auto = ProviderOptions {
            tee: TeeChoice::Auto,
            ..with_device.clone()
        };
        assert!(
            provider::select(&auto)
                .unwrap()
                .describe()
                .starts_with("tdx via")
        );
    }
    // Neither: the message names every place looked at, in the probe order.
    let none = ProviderOptions {
        tee: TeeChoice::Auto,
        tdx_guest: Some(empty.path().join("no-tdx_guest")),
        ..with_device
    };
    if std::path::Path::new("/dev/sev-guest").exists() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the \"none found\" message, /dev/sev-guest exists here"
        );
        return;
    }
    let e = provider::select(&none).err().unwrap().to_string();
    let order = [
        "snp: ",
        "no /dev/sev-guest",
        "tdx: ",
        "no-tdx_guest either",
        "sim: no --sim-socket",
    ];
    let mut at = 0;
    for part in order {
        let found = e[at..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} in {e}"));
        at += found + part.len();
    }
}
