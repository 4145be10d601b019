//! The `/dev/sev-guest` and `/dev/tdx_guest` providers against in-process fakes of the devices whose answers
//! the simulator produces: what the provider asks reaches the device, what it returns verifies (offline with
//! the simulator's roots, and end to end through a simulated-mode service), and every failure of the device
//! gives an error a person can act on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fixture, Service, sim_dir, simulator};
use cvm_agent::certtable::{CertKind, HostCert};
use cvm_agent::provider::{self, Provider, ProviderOptions, TeeChoice};
use cvm_agent::sevguest::{ExtReport, SevDeviceError, SevGuest, SevGuestDevice};
use cvm_agent::tdxguest::{
    HEADER_LEN, TDREPORT_LEN, TDREPORT_REPORTDATA, TdxDeviceError, TdxGuest, TdxGuestDevice,
    quote_header,
};
use cvm_agent::unlock::{self, ServerOptions};
use cvm_attest::protocol::TeeKind;
use cvm_attest::sim::dir::Layout;
use cvm_attest::sim::{SnpRequest, TdxRequest};
use cvm_attest::verify::{VerifyInputs, verify};
use std::sync::{Arc, Mutex};

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

/// What the fake SEV guest device does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SevMode {
    /// Answer with a simulated report and the host's ARK, VCEK and ASK (in that table order).
    Answer,
    /// Answer without a VCEK (only the ASK and ARK).
    NoVcek,
    /// The firmware refuses.
    FirmwareError,
    /// The device cannot be opened.
    OpenError,
}

struct FakeSevGuest {
    mode: SevMode,
    /// The (REPORT_DATA, VMPL) of every request.
    asked: Mutex<Vec<([u8; 64], u32)>>,
}

impl FakeSevGuest {
    fn new(mode: SevMode) -> Arc<Self> {
        Arc::new(FakeSevGuest {
            mode,
            asked: Mutex::new(Vec::new()),
        })
    }
}

impl SevGuestDevice for FakeSevGuest {
    fn ext_report(&self, report_data: &[u8; 64], vmpl: u32) -> Result<ExtReport, SevDeviceError> {
        self.asked.lock().unwrap().push((*report_data, vmpl));
        let amd = &simulator().amd;
        let cert = |kind, der: &[u8]| HostCert {
            kind,
            der: der.to_vec(),
        };
        let certs = match self.mode {
            SevMode::OpenError => {
                return Err(SevDeviceError::Open(std::io::ErrorKind::NotFound.into()));
            }
            SevMode::FirmwareError => {
                return Err(SevDeviceError::Firmware(
                    "firmware error 0x16 (invalid parameter)".into(),
                ));
            }
            SevMode::Answer => vec![
                cert(CertKind::Ark, amd.ark_der()),
                cert(CertKind::Vcek, amd.vcek_der()),
                cert(CertKind::Ask, amd.ask_der()),
            ],
            SevMode::NoVcek => vec![
                cert(CertKind::Ask, amd.ask_der()),
                cert(CertKind::Ark, amd.ark_der()),
            ],
        };
        let report = amd
            .snp_report(&SnpRequest {
                report_data: *report_data,
                measurement: common::MEASUREMENT,
                vmpl,
                ..SnpRequest::default()
            })
            .unwrap();
        Ok(ExtReport { report, certs })
    }
}

#[test]
fn sev_guest_report_data_and_vmpl_reach_the_device_and_the_report_verifies() {
    let fake = FakeSevGuest::new(SevMode::Answer);
    let p = SevGuest::with_device(fake.clone()).with_vmpl(1);
    assert!(p.describe().contains("/dev/sev-guest"), "{}", p.describe());
    let rd = [0x42; 64];
    let ev = p.evidence(&rd).unwrap();
    assert_eq!(*fake.asked.lock().unwrap(), vec![(rd, 1)]);
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
    let p = SevGuest::with_device(FakeSevGuest::new(SevMode::Answer));
    let opts = ServerOptions::new(&s.url(), &f.ca(), "db");
    assert!(opts.send_certs);
    let secret = rt().block_on(unlock::fetch(&opts, &p)).unwrap();
    assert_eq!(&secret[..], b"from sev-guest");
}

#[test]
fn sev_guest_failures_say_what_to_do() {
    // No VCEK from the host: an error naming what came and the two ways out...
    let p = SevGuest::with_device(FakeSevGuest::new(SevMode::NoVcek));
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(
        e.contains("no VCEK or VLEK") && e.contains("ASK, ARK"),
        "{e}"
    );
    assert!(
        e.contains("snphost import") && e.contains("--omit-certs"),
        "{e}"
    );
    // ...unless the certificates are optional: the report goes alone.
    let ev = p.with_certs_required(false).evidence(&[0; 64]).unwrap();
    assert!(ev.certs.is_empty());
    assert_eq!(ev.evidence.len(), 1184);

    let p = SevGuest::with_device(FakeSevGuest::new(SevMode::FirmwareError));
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(
        e.contains("SNP_GET_EXT_REPORT failed: firmware error 0x16"),
        "{e}"
    );

    let p = SevGuest::with_device(FakeSevGuest::new(SevMode::OpenError));
    let e = p.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(
        e.contains("open /dev/sev-guest") && e.contains("are we root"),
        "{e}"
    );

    // A VMPL an SNP guest does not have never reaches the device.
    let fake = FakeSevGuest::new(SevMode::Answer);
    let e = SevGuest::with_device(fake.clone())
        .with_vmpl(4)
        .evidence(&[0; 64])
        .unwrap_err()
        .to_string();
    assert!(e.contains("VMPL 4") && e.contains("0 to 3"), "{e}");
    assert!(fake.asked.lock().unwrap().is_empty());
}

#[test]
fn the_real_sev_guest_device_explains_its_absence() {
    if std::path::Path::new("/dev/sev-guest").exists() {
        eprintln!(
            "skipped: /dev/sev-guest exists here (an SNP guest); this checks the message without it"
        );
        return;
    }
    let e = SevGuest::new().evidence(&[0; 64]).unwrap_err().to_string();
    assert!(e.contains("open /dev/sev-guest"), "{e}");
    assert!(e.contains("SNP guest with the sev-guest driver"), "{e}");
}

/// What the fake TDX guest device does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TdxMode {
    /// TDREPORT and a simulated quote.
    Answer,
    /// The VMM answers GetQuote with "service unavailable".
    Unavailable,
    /// The VMM claims a quote longer than the buffer.
    Overlong,
    /// The driver has no GetQuote.
    NoQuotes,
}

struct FakeTdxGuest {
    mode: TdxMode,
    /// The REPORT_DATA of every TDREPORT asked for.
    asked: Mutex<Vec<[u8; 64]>>,
}

impl FakeTdxGuest {
    fn new(mode: TdxMode) -> Arc<Self> {
        Arc::new(FakeTdxGuest {
            mode,
            asked: Mutex::new(Vec::new()),
        })
    }
}

impl TdxGuestDevice for FakeTdxGuest {
    fn name(&self) -> String {
        "fake-tdx_guest".into()
    }

    fn get_report0(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TdxDeviceError> {
        self.asked.lock().unwrap().push(*report_data);
        // A TDREPORT: REPORTMACSTRUCT with REPORTDATA at 128; the rest does not matter to the fake QE.
        let mut r = vec![0xee; TDREPORT_LEN];
        r[TDREPORT_REPORTDATA..TDREPORT_REPORTDATA + 64].copy_from_slice(report_data);
        Ok(r)
    }

    fn get_quote(&self, buf: &mut [u8]) -> Result<(), TdxDeviceError> {
        if self.mode == TdxMode::NoQuotes {
            return Err(TdxDeviceError::NoQuotes {
                path: self.name().into(),
            });
        }
        // The VMM's side: read the header and TDREPORT as the TD wrote them.
        let h = quote_header(buf).unwrap();
        assert_eq!((h.version, h.status.0, h.in_len), (1, 0, 1024));
        let tdreport = &buf[HEADER_LEN..HEADER_LEN + TDREPORT_LEN];
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
        let (status, out_len) = match self.mode {
            TdxMode::Unavailable => (0x8000_0000_0000_0001u64, 0u32),
            TdxMode::Overlong => (0, buf.len() as u32),
            _ => (0, quote.len() as u32),
        };
        buf[8..16].copy_from_slice(&status.to_le_bytes());
        buf[20..24].copy_from_slice(&out_len.to_le_bytes());
        buf[HEADER_LEN..HEADER_LEN + quote.len()].copy_from_slice(&quote);
        Ok(())
    }
}

#[test]
fn tdx_guest_quote_carries_the_report_data_and_verifies() {
    let fake = FakeTdxGuest::new(TdxMode::Answer);
    let p = TdxGuest::with_device(fake.clone());
    let rd = [0x24; 64];
    let ev = p.evidence(&rd).unwrap();
    assert_eq!(*fake.asked.lock().unwrap(), vec![rd]);
    assert_eq!(ev.tee, TeeKind::Tdx);
    assert!(ev.certs.is_empty());
    let verdict = verify(
        &ev.evidence,
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

    // End to end through the service.
    let f = Fixture::new("127.0.0.1:0");
    let s = Service::start(&f);
    s.put(&f, "db", b"from tdx_guest");
    let opts = ServerOptions::new(&s.url(), &f.ca(), "db");
    let secret = rt().block_on(unlock::fetch(&opts, &p)).unwrap();
    assert_eq!(&secret[..], b"from tdx_guest");
}

#[test]
fn tdx_guest_failures_say_what_to_do() {
    let e = |mode| {
        TdxGuest::with_device(FakeTdxGuest::new(mode))
            .evidence(&[0; 64])
            .unwrap_err()
            .to_string()
    };
    let m = e(TdxMode::Unavailable);
    assert!(m.contains("0x8000000000000001") && m.contains("QGS"), "{m}");
    let m = e(TdxMode::Overlong);
    assert!(m.contains("runs past"), "{m}");
    let m = e(TdxMode::NoQuotes);
    assert!(
        m.contains("offers no quotes") && m.contains("configfs-tsm"),
        "{m}"
    );
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
        eprintln!("skipped: the \"none found\" message, /dev/sev-guest exists here");
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
