//! `cvm-attest`: evidence formats (SEV-SNP reports, TDX quotes), their verifiers, the appraisal policy,
//! the simulator, the protocol and the attestation service.
