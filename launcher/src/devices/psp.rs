//! The simulated PSP as the guest sees it: three I/O ports standing in for the SNP guest request
//! path (`MSG_REPORT_REQ`, SEV-SNP ABI spec §7.3) of a real guest.
//!
//! | port  | write                                    | read                               |
//! |-------|------------------------------------------|------------------------------------|
//! | 0x510 | append one REPORT_DATA byte (64 at most) | next byte of the response          |
//! | 0x511 | command: 1 GET_REPORT, 0 reset           | status of the last command         |
//! | 0x512 | —                                        | response length (16 bit)           |
//!
//! Status: 0 ok, 1 no command yet, 2 REPORT_DATA was not exactly 64 bytes, 3 the signer failed,
//! 4 unknown command. The report is signed with the plan's measurement by a [`ReportSigner`].

use std::sync::Arc;

use super::PioDevice;

/// First port of the device.
pub const PSP_BASE: u16 = 0x510;
/// Number of ports.
pub const PSP_LEN: u16 = 3;

/// Status codes read from port 0x511.
pub mod status {
    /// The last command succeeded.
    pub const OK: u8 = 0;
    /// No command was issued yet.
    pub const IDLE: u8 = 1;
    /// REPORT_DATA was not exactly 64 bytes.
    pub const BAD_LENGTH: u8 = 2;
    /// The signer failed.
    pub const SIGNER_FAILED: u8 = 3;
    /// Unknown command.
    pub const BAD_COMMAND: u8 = 4;
}

/// Whoever signs SNP reports for this launch: the simulated AMD secure processor with the plan's
/// measurement baked in.
pub trait ReportSigner: Send + Sync {
    /// An attestation report for `report_data`.
    fn snp_report(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, String>;
    /// The certificates a verifier needs (VCEK DER first).
    fn certs(&self) -> Vec<Vec<u8>>;
    /// A TDX-format quote for `report_data` (the launch's MRTD), for host processes that ask the
    /// simulated PSP socket for TDX evidence. A signer without a TDX plan refuses.
    fn tdx_quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
        let _ = report_data;
        Err("this simulated PSP signs SNP reports only".into())
    }
}

/// Counters of what the guest did wrong (never fatal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PspFaults {
    /// REPORT_DATA bytes past the 64th.
    pub overflow_bytes: u64,
    /// Response bytes read past the end.
    pub overread_bytes: u64,
    /// Accesses of the wrong width or to no register.
    pub bad_accesses: u64,
}

/// The device.
pub struct PspDevice {
    signer: Arc<dyn ReportSigner>,
    request: Vec<u8>,
    response: Vec<u8>,
    cursor: usize,
    status: u8,
    faults: PspFaults,
    requests: u64,
}

impl PspDevice {
    /// A device answering with `signer`.
    pub fn new(signer: Arc<dyn ReportSigner>) -> Self {
        Self {
            signer,
            request: Vec::with_capacity(64),
            response: Vec::new(),
            cursor: 0,
            status: status::IDLE,
            faults: PspFaults::default(),
            requests: 0,
        }
    }

    /// What the guest did wrong so far.
    pub const fn faults(&self) -> PspFaults {
        self.faults
    }

    /// Number of GET_REPORT commands served.
    pub const fn requests(&self) -> u64 {
        self.requests
    }

    fn command(&mut self, cmd: u8) {
        self.response.clear();
        self.cursor = 0;
        self.status = match cmd {
            0 => status::OK,
            1 => match <[u8; 64]>::try_from(self.request.as_slice()) {
                Err(_) => status::BAD_LENGTH,
                Ok(rd) => match self.signer.snp_report(&rd) {
                    Ok(report) => {
                        self.requests += 1;
                        self.response = report;
                        status::OK
                    }
                    Err(_) => status::SIGNER_FAILED,
                },
            },
            _ => status::BAD_COMMAND,
        };
        self.request.clear();
    }
}

impl PioDevice for PspDevice {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 1) => match self.response.get(self.cursor) {
                Some(&b) => {
                    data[0] = b;
                    self.cursor += 1;
                }
                None => self.faults.overread_bytes += 1,
            },
            (1, 1) => data[0] = self.status,
            (2, 2) => {
                let len = u16::try_from(self.response.len()).unwrap_or(u16::MAX);
                data.copy_from_slice(&len.to_le_bytes());
            }
            _ => self.faults.bad_accesses += 1,
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        match (offset, data) {
            (0, [b]) => {
                if self.request.len() < 64 {
                    self.request.push(*b);
                } else {
                    self.faults.overflow_bytes += 1;
                }
            }
            (1, [cmd]) => self.command(*cmd),
            _ => self.faults.bad_accesses += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl ReportSigner for Echo {
        fn snp_report(&self, rd: &[u8; 64]) -> Result<Vec<u8>, String> {
            Ok(rd.to_vec())
        }
        fn certs(&self) -> Vec<Vec<u8>> {
            Vec::new()
        }
    }

    #[test]
    fn serves_a_report_for_64_bytes_and_counts_misuse() {
        let mut d = PspDevice::new(Arc::new(Echo));
        let mut b = [0u8; 1];
        d.read(1, &mut b);
        assert_eq!(b[0], status::IDLE);
        for i in 0..65u8 {
            d.write(0, &[i]);
        }
        d.write(1, &[1]);
        d.read(1, &mut b);
        assert_eq!(b[0], status::OK);
        let mut len = [0u8; 2];
        d.read(2, &mut len);
        assert_eq!(u16::from_le_bytes(len), 64);
        let got: Vec<u8> = (0..64)
            .map(|_| {
                d.read(0, &mut b);
                b[0]
            })
            .collect();
        assert_eq!(got, (0..64).collect::<Vec<u8>>());
        d.read(0, &mut b);
        d.read(2, &mut b);
        assert_eq!(
            d.faults(),
            PspFaults {
                overflow_bytes: 1,
                overread_bytes: 1,
                bad_accesses: 1
            }
        );
        d.write(1, &[1]);
        d.read(1, &mut b);
        assert_eq!(b[0], status::BAD_LENGTH);
    }
}
