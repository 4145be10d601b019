//! `/dev/kvm`: API version and capabilities (KVM API documentation, `KVM_GET_API_VERSION`,
//! `KVM_CHECK_EXTENSION`).

use kvm_bindings::{
    KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES,
};
use kvm_ioctls::Kvm;

/// What `/dev/kvm` says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmFacts {
    /// `KVM_GET_API_VERSION` (12 on every kernel since 2.6.22).
    pub api_version: i32,
    /// `KVM_CHECK_EXTENSION(KVM_CAP_VM_TYPES)`: bit n set when VM type n can be created
    /// (0 default, 1 software-protected, 2 SEV, 3 SEV-ES, 4 SNP, 5 TDX). 0 on kernels before 6.10.
    pub vm_types: u32,
    /// `KVM_CAP_USER_MEMORY2` on a default VM.
    pub user_memory2: bool,
    /// `KVM_CAP_GUEST_MEMFD` on a default VM.
    pub guest_memfd: bool,
    /// `KVM_CAP_MEMORY_ATTRIBUTES` on a default VM: the attributes supported (bit 3 = private).
    pub memory_attributes: u64,
}

/// Why `/dev/kvm` could not be asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvmError {
    /// Opening `/dev/kvm` failed.
    #[error(
        "cannot open /dev/kvm: {0} (is KVM enabled, the kvm module loaded, and may this user open it?)"
    )]
    Open(vmm_sys_util::errno::Error),
    /// Creating a VM to check VM-level capabilities failed.
    #[error("cannot create a default KVM VM to check its capabilities: {0}")]
    CreateVm(vmm_sys_util::errno::Error),
}

/// Opens `/dev/kvm` and reads [`KvmFacts`]. A default VM is created (and dropped) because
/// guest_memfd and memory attribute capabilities are answered per VM.
pub fn probe() -> Result<KvmFacts, KvmError> {
    let kvm = Kvm::new().map_err(KvmError::Open)?;
    let vm_types = u32::try_from(kvm.check_extension_raw(KVM_CAP_VM_TYPES.into())).unwrap_or(0);
    let vm = kvm.create_vm().map_err(KvmError::CreateVm)?;
    Ok(KvmFacts {
        api_version: kvm.get_api_version(),
        vm_types,
        user_memory2: vm.check_extension_raw(KVM_CAP_USER_MEMORY2.into()) > 0,
        guest_memfd: vm.check_extension_raw(KVM_CAP_GUEST_MEMFD.into()) > 0,
        memory_attributes: u64::try_from(vm.check_extension_raw(KVM_CAP_MEMORY_ATTRIBUTES.into()))
            .unwrap_or(0),
    })
}
