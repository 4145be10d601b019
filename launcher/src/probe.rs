//! `cvm-launch probe`: what this host offers for confidential VMs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::kvm::sev_dev::{self, SevPlatformStatus};
use crate::kvm::system;

/// VM type numbers of `KVM_CREATE_VM` on x86 (Linux `arch/x86/include/uapi/asm/kvm.h`).
pub const VM_TYPE_NAMES: [(u32, &str); 6] = [
    (0, "default"),
    (1, "sw_protected"),
    (2, "sev"),
    (3, "sev_es"),
    (4, "snp"),
    (5, "tdx"),
];

/// The probe's findings; `None` means "could not be determined" (the matching `*_error` says why).
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// `/dev/kvm` could be opened.
    pub kvm: bool,
    /// Why not, when it could not.
    pub kvm_error: Option<String>,
    /// `KVM_GET_API_VERSION`.
    pub kvm_api_version: Option<i32>,
    /// `KVM_CAP_VM_TYPES` mask in hex.
    pub vm_types_mask: Option<String>,
    /// Names of the VM types KVM can create (`default` is always there when KVM works).
    pub vm_types: Vec<&'static str>,
    /// SNP VMs can be created (`KVM_X86_SNP_VM`).
    pub snp_vm: bool,
    /// TDX VMs can be created (`KVM_X86_TDX_VM`).
    pub tdx_vm: bool,
    /// `KVM_CAP_GUEST_MEMFD`.
    pub guest_memfd: Option<bool>,
    /// `KVM_CAP_USER_MEMORY2`.
    pub user_memory2: Option<bool>,
    /// `KVM_CAP_MEMORY_ATTRIBUTES` mask in hex.
    pub memory_attributes: Option<String>,
    /// `/dev/sev` exists.
    pub sev_device: bool,
    /// SEV firmware PLATFORM_STATUS, when `/dev/sev` answered.
    pub sev_firmware: Option<SevPlatformStatus>,
    /// Why `/dev/sev` did not answer.
    pub sev_error: Option<String>,
    /// `kvm_amd` module parameters `sev`, `sev_es`, `sev_snp` (absent when the module is not loaded).
    pub kvm_amd: BTreeMap<String, String>,
    /// `kvm_intel` module parameter `tdx`, when present.
    pub kvm_intel_tdx: Option<String>,
}

fn module_param(module: &str, name: &str) -> Option<String> {
    let p = format!("/sys/module/{module}/parameters/{name}");
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// Whether `/dev/kvm` can be opened for a VM (the reason when not): the quick check before a
/// `run --tee sim`, without the rest of [`probe`].
pub fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm: {e}"))
}

/// Looks at `/dev/kvm`, `/dev/sev` and the KVM modules' parameters. Never fails: what cannot be
/// read is reported as unknown with the reason.
pub fn probe() -> ProbeReport {
    let kvm = system::probe();
    let (facts, kvm_error) = match kvm {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mask = facts.as_ref().map_or(0, |f| f.vm_types);
    // Before KVM_CAP_VM_TYPES (Linux 6.10) only the default type exists.
    let mask = if facts.is_some() && mask == 0 {
        1
    } else {
        mask
    };
    let vm_types = VM_TYPE_NAMES
        .iter()
        .filter(|(n, _)| mask & (1 << n) != 0)
        .map(|(_, s)| *s)
        .collect();
    let sev_path = Path::new("/dev/sev");
    let sev_device = sev_path.exists();
    let (sev_firmware, sev_error) = if sev_device {
        match sev_dev::platform_status(sev_path) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    let kvm_amd = ["sev", "sev_es", "sev_snp"]
        .iter()
        .filter_map(|n| module_param("kvm_amd", n).map(|v| ((*n).to_owned(), v)))
        .collect();
    ProbeReport {
        kvm: facts.is_some(),
        kvm_error,
        kvm_api_version: facts.as_ref().map(|f| f.api_version),
        vm_types_mask: facts.as_ref().map(|f| format!("{:#x}", f.vm_types)),
        vm_types,
        snp_vm: mask & (1 << 4) != 0,
        tdx_vm: mask & (1 << 5) != 0,
        guest_memfd: facts.as_ref().map(|f| f.guest_memfd),
        user_memory2: facts.as_ref().map(|f| f.user_memory2),
        memory_attributes: facts
            .as_ref()
            .map(|f| format!("{:#x}", f.memory_attributes)),
        sev_device,
        sev_firmware,
        sev_error,
        kvm_amd,
        kvm_intel_tdx: module_param("kvm_intel", "tdx"),
    }
}

fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn opt<T: std::fmt::Display>(o: &Option<T>) -> String {
    o.as_ref()
        .map_or_else(|| "unknown".to_owned(), T::to_string)
}

impl ProbeReport {
    /// A human-readable summary, one fact per line.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let mut line = |k: &str, v: String| t.push_str(&format!("{k:<22} {v}\n"));
        match &self.kvm_error {
            None => line("kvm", "yes".into()),
            Some(e) => line("kvm", format!("no ({e})")),
        }
        line("kvm api version", opt(&self.kvm_api_version));
        line(
            "vm types",
            format!(
                "{} (KVM_CAP_VM_TYPES {})",
                self.vm_types.join(", "),
                opt(&self.vm_types_mask)
            ),
        );
        line("snp vm", yn(self.snp_vm).into());
        line("tdx vm", yn(self.tdx_vm).into());
        line("guest_memfd", opt(&self.guest_memfd.map(yn)));
        line("user memory2", opt(&self.user_memory2.map(yn)));
        line("memory attributes", opt(&self.memory_attributes));
        let sev = match (&self.sev_firmware, &self.sev_error) {
            (Some(s), _) => format!(
                "yes, firmware {}.{} build {} (state {}, {} guests)",
                s.api_major, s.api_minor, s.build, s.state, s.guest_count
            ),
            (None, Some(e)) => format!("present, but {e}"),
            (None, None) => "no".into(),
        };
        line("/dev/sev", sev);
        let amd: Vec<String> = self
            .kvm_amd
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        line(
            "kvm_amd",
            if amd.is_empty() {
                "not loaded".into()
            } else {
                amd.join(" ")
            },
        );
        line(
            "kvm_intel tdx",
            self.kvm_intel_tdx
                .clone()
                .unwrap_or_else(|| "not available".into()),
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn probe_answers_on_any_host() {
        let r = probe();
        if Path::new("/dev/kvm").exists() && r.kvm {
            assert_eq!(r.kvm_api_version, Some(12));
            assert!(r.vm_types.contains(&"default"));
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: /dev/kvm is not usable here: {:?}",
                r.kvm_error
            );
            assert!(r.kvm_error.is_some());
        }
        let text = r.to_text();
        assert!(text.contains("snp vm") && text.contains("guest_memfd"));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["snp_vm"].is_boolean());
    }
}
