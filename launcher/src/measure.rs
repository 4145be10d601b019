//! Offline launch measurement: the SNP launch digest of a [`LaunchPlan`], and how it is printed.

use crate::plan::{LaunchPlan, LaunchUpdate};
use crate::snp::digest::{DIGEST_LEN, LaunchDigest, PageType};

/// The SNP launch digest (MEASUREMENT of the attestation report) of `plan`.
pub fn snp_digest(plan: &LaunchPlan) -> [u8; DIGEST_LEN] {
    let mut ld = LaunchDigest::new();
    for u in &plan.updates {
        match u {
            LaunchUpdate::Data { gpa, data, .. } => ld.update_normal(*gpa, data),
            LaunchUpdate::Empty {
                gpa,
                page_type,
                pages,
            } => ld.update_empty(*page_type, *gpa, *pages),
            LaunchUpdate::Vmsa { page, .. } => ld.update_vmsa(page),
        }
    }
    ld.value().to_owned()
}

/// Number of bytes whose SHA-384 the digest of `plan` computes (page contents only).
pub fn measured_bytes(plan: &LaunchPlan) -> u64 {
    plan.updates
        .iter()
        .map(|u| match u {
            LaunchUpdate::Data { data, .. } => data.len() as u64,
            LaunchUpdate::Vmsa { page, .. } => page.len() as u64,
            LaunchUpdate::Empty { .. } => 0,
        })
        .sum()
}

/// Count of PAGE_INFO structures by page type (for diagnostics).
pub fn page_counts(plan: &LaunchPlan) -> Vec<(PageType, u64)> {
    let mut counts: Vec<(PageType, u64)> = Vec::new();
    let mut add = |t: PageType, n: u64| match counts.iter_mut().find(|(k, _)| *k == t) {
        Some((_, c)) => *c += n,
        None => counts.push((t, n)),
    };
    for u in &plan.updates {
        match u {
            LaunchUpdate::Data {
                page_type, data, ..
            } => add(*page_type, (data.len() / 4096) as u64),
            LaunchUpdate::Empty {
                page_type, pages, ..
            } => add(*page_type, *pages),
            LaunchUpdate::Vmsa { .. } => add(PageType::VMSA, 1),
        }
    }
    counts
}

/// How `cvm-launch measure` prints a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The `[snp] measurements = [...]` policy fragment of the appraisal policy.
    Toml,
    /// 96 lowercase hex digits.
    Hex,
    /// One JSON object with the digest and the plan's parameters.
    Json,
}

/// Renders the SNP digest of `plan` in `format` (ends with a newline).
pub fn render_snp(plan: &LaunchPlan, digest: &[u8; DIGEST_LEN], format: Format) -> String {
    let hex = hex::encode(digest);
    match format {
        Format::Hex => format!("{hex}\n"),
        Format::Toml => format!("[snp]\nmeasurements = [\"{hex}\"]\n"),
        Format::Json => {
            let v = serde_json::json!({
                "tee": "snp",
                "measurement": hex,
                "vcpus": plan.vcpus,
                "cpu_type": plan.cpu.name,
                "cpu_signature": format!("{:#x}", plan.cpu.signature()),
                "vmm_type": plan.vmm.name(),
                "guest_features": format!("{:#x}", plan.guest_features),
                "firmware_gpa": format!("{:#x}", plan.firmware_gpa),
                "firmware_size": plan.firmware_len,
                "metadata_sections": plan.ovmf.sections.len(),
            });
            format!("{v}\n")
        }
    }
}

/// Renders a TDX MRTD in `format` (ends with a newline): TOML is the `[tdx] mrtd = [...]`
/// fragment of the appraisal policy.
pub fn render_tdx(mrtd: &[u8; 48], format: Format) -> String {
    let hex = hex::encode(mrtd);
    match format {
        Format::Hex => format!("{hex}\n"),
        Format::Toml => format!("[tdx]\nmrtd = [\"{hex}\"]\n"),
        Format::Json => format!("{}\n", serde_json::json!({ "tee": "tdx", "mrtd": hex })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DEFAULT_GUEST_FEATURES, SnpPlanConfig};
    use crate::snp::cpu::CpuType;
    use crate::snp::vmsa::VmmType;
    use crate::synthetic::TestImage;

    fn plan() -> LaunchPlan {
        LaunchPlan::snp(SnpPlanConfig {
            firmware: TestImage::default().build(),
            vcpus: 1,
            cpu: CpuType::by_name("EPYC-Milan").unwrap(),
            vmm: VmmType::Qemu,
            guest_features: DEFAULT_GUEST_FEATURES,
            kernel_hashes: None,
        })
        .unwrap()
    }

    #[test]
    fn toml_is_the_policy_fragment() {
        let p = plan();
        let d = snp_digest(&p);
        let t = render_snp(&p, &d, Format::Toml);
        assert_eq!(
            t,
            format!("[snp]\nmeasurements = [\"{}\"]\n", hex::encode(d))
        );
        let j: serde_json::Value = serde_json::from_str(&render_snp(&p, &d, Format::Json)).unwrap();
        assert_eq!(j["measurement"], hex::encode(d));
    }

    #[test]
    fn counts_pages_by_type() {
        let p = plan();
        let c = page_counts(&p);
        assert!(c.contains(&(PageType::NORMAL, 16)));
        assert!(c.contains(&(PageType::VMSA, 1)));
        assert_eq!(measured_bytes(&p), 64 * 1024 + 4096);
    }
}
