//! The simulated AMD secure processor of a `run --tee sim` launch: [`cvm_attest::sim::SimAmd`]
//! with the plan's SNP digest as MEASUREMENT and the launch's HOST_DATA, behind [`ReportSigner`].

use std::path::Path;

use cvm_attest::sim::{SimAmd, SimError, SnpRequest};

use crate::devices::psp::ReportSigner;

/// A simulated PSP for one launch.
#[derive(Debug)]
pub struct SimPsp {
    amd: SimAmd,
    measurement: [u8; 48],
    host_data: [u8; 32],
}

impl SimPsp {
    /// Loads the simulator from `sim_dir` (made by `cvm-attest sim init`) for a launch whose
    /// digest is `measurement`.
    pub fn load(
        sim_dir: &Path,
        measurement: [u8; 48],
        host_data: [u8; 32],
    ) -> Result<Self, SimError> {
        Ok(Self {
            amd: SimAmd::load(sim_dir)?,
            measurement,
            host_data,
        })
    }
}

impl ReportSigner for SimPsp {
    fn snp_report(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
        self.amd
            .snp_report(&SnpRequest {
                report_data: *report_data,
                measurement: self.measurement,
                host_data: self.host_data,
                ..SnpRequest::default()
            })
            .map_err(|e| e.to_string())
    }

    fn certs(&self) -> Vec<Vec<u8>> {
        vec![self.amd.vcek_der().to_vec()]
    }
}
