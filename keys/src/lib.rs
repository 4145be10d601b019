//! `cvm-keys`: the cryptography and file formats every cvm program shares (HPKE, the evidence key binding,
//! sealed files, key files, the CA for the attestation service). No servers, no KVM.
