//! The simulated secure processor of a `run --tee sim` launch: the simulator's AMD side
//! ([`cvm_attest::sim::SimAmd`]) signs SNP reports with the plan's SNP digest as MEASUREMENT and the
//! launch's HOST_DATA; its Intel side ([`cvm_attest::sim::SimIntel`]) signs TDX quotes with the
//! firmware's MRTD, when the firmware has TDVF metadata, or for a direct Linux boot with the MRTD the TDX
//! module would compute had the plan's pages been added and measured in plan order
//! ([`direct_boot_mrtd`]). Both behind [`ReportSigner`].

use std::path::Path;

use cvm_attest::sim::{SimError, Simulator, SnpRequest, TdxRequest};

use crate::devices::psp::ReportSigner;
use crate::plan::{BootEntry, LaunchPlan, LaunchUpdate};
use crate::tdx::mrtd::Mrtd;

/// The simulated MRTD of a direct Linux boot (a plan without firmware): every page of the plan added
/// (TDH.MEM.PAGE.ADD) at its GPA in plan order, pages with contents also measured (TDH.MR.EXTEND of each
/// 256-byte chunk); the vCPU state is not part of MRTD. Real TDX boots Linux through TDVF and measures the
/// kernel into RTMRs; the simulation keeps one register so that one `[tdx] mrtd` value pins the kernel,
/// initrd and command line. `None` for firmware boots (their MRTD comes from the TDVF metadata).
pub fn direct_boot_mrtd(plan: &LaunchPlan) -> Option<[u8; 48]> {
    if !matches!(plan.entry, BootEntry::LongMode(_)) {
        return None;
    }
    const PAGE: u64 = 4096;
    let mut m = Mrtd::new();
    for update in &plan.updates {
        match update {
            LaunchUpdate::Data { gpa, data, .. } => {
                for (page_gpa, page) in (*gpa..)
                    .step_by(PAGE as usize)
                    .zip(data.chunks(PAGE as usize))
                {
                    m.page_add(page_gpa);
                    for (chunk_gpa, chunk) in (page_gpa..).step_by(256).zip(page.chunks(256)) {
                        let mut c = [0u8; 256];
                        c[..chunk.len()].copy_from_slice(chunk);
                        m.extend(chunk_gpa, &c);
                    }
                }
            }
            LaunchUpdate::Empty { gpa, pages, .. } => {
                for p in 0..*pages {
                    m.page_add(gpa + p * PAGE);
                }
            }
            LaunchUpdate::Vmsa { .. } => {}
        }
    }
    Some(m.finish())
}

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
