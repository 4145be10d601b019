//! The simulated secure processor of a `run --tee sim` launch: the simulator's AMD side
//! ([`cvm_attest::sim::SimAmd`]) signs SNP reports with the plan's SNP digest as MEASUREMENT and the
//! launch's HOST_DATA; its Intel side ([`cvm_attest::sim::SimIntel`]) signs TDX quotes with the
//! firmware's MRTD, when the firmware has TDVF metadata. Both behind [`ReportSigner`].

use std::path::Path;

use cvm_attest::sim::{SimError, Simulator, SnpRequest, TdxRequest};

use crate::devices::psp::ReportSigner;

/// The measurements of one launch, as the simulated TEEs report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchMeasurements {
    /// The SNP launch digest of the plan.
    pub snp: [u8; 48],
    /// The TDX MRTD of the firmware (`None`: the firmware has no TDVF metadata).
    pub mrtd: Option<[u8; 48]>,
}

/// A simulated PSP for one launch.
#[derive(Debug)]
pub struct SimPsp {
    sim: Simulator,
    measurements: LaunchMeasurements,
    host_data: [u8; 32],
}

impl SimPsp {
    /// Loads the simulator from `sim_dir` (made by `cvm-attest sim init`) for a launch with
    /// these measurements.
    pub fn load(
        sim_dir: &Path,
        measurements: LaunchMeasurements,
        host_data: [u8; 32],
    ) -> Result<Self, SimError> {
        Ok(Self {
            sim: Simulator::load(sim_dir)?,
            measurements,
            host_data,
        })
    }
}

impl ReportSigner for SimPsp {
    fn snp_report(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
        self.sim
            .amd
            .snp_report(&SnpRequest {
                report_data: *report_data,
                measurement: self.measurements.snp,
                host_data: self.host_data,
                ..SnpRequest::default()
            })
            .map_err(|e| e.to_string())
    }

    fn certs(&self) -> Vec<Vec<u8>> {
        vec![self.sim.amd.vcek_der().to_vec()]
    }

    fn tdx_quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
        let Some(mrtd) = self.measurements.mrtd else {
            return Err(
                "the firmware has no TDVF metadata, so this launch has no MRTD to quote".into(),
            );
        };
        self.sim
            .intel
            .tdx_quote(&TdxRequest {
                report_data: *report_data,
                mrtd,
                ..TdxRequest::default()
            })
            .map_err(|e| e.to_string())
    }
}
