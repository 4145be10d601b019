//! `cvm-attest`: evidence formats (SEV-SNP reports, TDX quotes), their verifiers, the appraisal policy,
//! the simulator, the protocol and the attestation service.

pub mod admin;
pub mod bench_serve;
pub mod client;
pub mod cursor;
pub mod excerpt;
pub mod kbs;
pub mod nonce;
pub mod pki;
pub mod policy;
pub mod protocol;
pub mod reason;
pub mod server;
pub mod sim;
pub mod snp;
pub mod store;
pub mod tdx;
pub mod token;
pub mod verdict;
pub mod verify;

pub use policy::Policy;
pub use reason::{Reason, Rejection};
pub use verdict::{Tee, Verdict};
pub use verify::{InputError, VerifyInputs, detect_tee, verify};
