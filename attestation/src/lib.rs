//! `cvm-attest`: evidence formats (SEV-SNP reports, TDX quotes), their verifiers, the appraisal policy,
//! the simulator, the protocol and the attestation service.

pub mod cursor;
pub mod pki;
pub mod policy;
pub mod reason;
pub mod sim;
pub mod snp;
pub mod tdx;
pub mod verdict;
pub mod verify;

pub use policy::Policy;
pub use reason::{Reason, Rejection};
pub use verdict::{Tee, Verdict};
pub use verify::{InputError, VerifyInputs, detect_tee, verify};
