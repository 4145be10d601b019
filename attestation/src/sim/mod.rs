//! A cryptographically real simulated TEE (issue #5; DESIGN.md "Simulated TEE"): a simulated AMD secure
//! processor ([`SimAmd`]) and a simulated TDX quoting enclave ([`SimIntel`]) that produce byte-exact SNP
//! reports and TDX v4 quotes, signed by simulated vendor chains. The production verifiers check them on their
//! production path; only the trust roots differ. Every simulated certificate names the organization
//! "cvm simulator", so verdicts say `simulated: true`.
//!
//! - [`init`] creates a sim directory ([`dir`] describes the layout) from a seed: the same seed gives the
//!   same keys.
//! - [`Simulator::load`] (or [`SimAmd::load`] / [`SimIntel::load`]) reads it once; then
//!   [`SimAmd::snp_report`] and [`SimIntel::tdx_quote`] only sign.
//!
//! ```no_run
//! use cvm_attest::sim::{self, InitOptions, SnpRequest, Simulator};
//! # fn run() -> Result<(), sim::SimError> {
//! sim::init("/tmp/sim".as_ref(), &InitOptions::default())?;
//! let simulator = Simulator::load("/tmp/sim".as_ref())?;
//! let report = simulator.amd.snp_report(&SnpRequest { measurement: [1; 48], ..Default::default() })?;
//! let vcek = simulator.amd.vcek_der(); // give it to the verifier with the report
//! # let _ = (report, vcek); Ok(()) }
//! ```
//!
//! What is real: every byte layout, signature algorithm, certificate extension and collateral format.
//! What is not: the keys are derived from a seed file on disk, not fused into hardware, and nothing measures
//! or isolates the guest.

pub mod amd;
pub mod der;
pub mod dir;
pub mod drbg;
pub mod ecdsa;
pub mod error;
pub mod hexarg;
pub mod intel;
pub mod pem;
pub mod rsa;
pub mod snp;
pub mod tdx;
pub mod wire;

pub use error::SimError;
pub use snp::{AmdHierarchy, SimAmd, SnpRequest};
pub use tdx::{SimIntel, TdxRequest};

use crate::snp::Product;
use dir::{Layout, PRIVATE_DIR, PRIVATE_FILE, PUBLIC_DIR, PUBLIC_FILE};
use intel::IntelHierarchy;
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Size of a seed made when none is given.
pub const SEED_LEN: usize = 32;
/// Shortest seed accepted from a seed file.
pub const MIN_SEED_LEN: usize = 16;

/// How to create a sim directory.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The seed (at least [`MIN_SEED_LEN`] bytes); random when `None`. It is kept in `private/seed`.
    pub seed: Option<Vec<u8>>,
    /// The simulated AMD product (Milan by default).
    pub product: Product,
    /// Creation time (Unix seconds): start of every validity window; collateral is current for a year.
    pub now: i64,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            seed: None,
            product: Product::Milan,
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

/// Create the sim directory `out` (absent or empty): AMD and Intel hierarchies, TDX collateral and the
/// private keys, all derived from the seed.
pub fn init(out: &Path, options: &InitOptions) -> Result<(), SimError> {
    let seed = match &options.seed {
        Some(seed) if seed.len() < MIN_SEED_LEN => {
            return Err(SimError::Request(format!(
                "the seed is {} bytes; use at least {MIN_SEED_LEN}",
                seed.len()
            )));
        }
        Some(seed) => seed.clone(),
        None => {
            let mut seed = vec![0u8; SEED_LEN];
            SystemRandom::new()
                .fill(&mut seed)
                .map_err(|_| SimError::Crypto("no randomness for the seed".into()))?;
            seed
        }
    };
    dir::prepare_empty(out)?;
    let amd = AmdHierarchy::generate(&seed, options.product, options.now)?;
    let intel = IntelHierarchy::generate(&seed, options.now)?;
    let l = Layout::new(out);
    let private = l.private();
    dir::create_dir(&private, PRIVATE_DIR)?;
    dir::create_dir(&l.snp(), PUBLIC_DIR)?;
    dir::create_dir(&l.collateral(), PUBLIC_DIR)?;
    let cert_pem = |der: &[u8]| pem::encode("CERTIFICATE", der);
    let private_files: [(&str, &[u8]); 9] = [
        ("seed", &seed),
        ("ark.key.der", amd.ark.key_pkcs1()),
        ("ask.key.der", amd.ask.key_pkcs1()),
        ("vcek.key.p8", &amd.vcek_pkcs8),
        ("intel-root.key.p8", &intel.keys.root),
        ("intel-pck-ca.key.p8", &intel.keys.pck_ca),
        ("intel-pck.key.p8", &intel.keys.pck),
        ("intel-tcb-signing.key.p8", &intel.keys.tcb_signing),
        ("intel-attestation.key.p8", &intel.keys.attestation),
    ];
    for (name, bytes) in private_files {
        dir::write(&private.join(name), bytes, PRIVATE_FILE)?;
    }
    let snp = l.snp();
    dir::write(
        &snp.join("ark.pem"),
        cert_pem(amd.ark.der()).as_bytes(),
        PUBLIC_FILE,
    )?;
    dir::write(
        &snp.join("ask.pem"),
        cert_pem(amd.ask.der()).as_bytes(),
        PUBLIC_FILE,
    )?;
    let chain = cert_pem(amd.ask.der()) + &cert_pem(amd.ark.der());
    dir::write(&snp.join("cert_chain.pem"), chain.as_bytes(), PUBLIC_FILE)?;
    dir::write(&snp.join("vcek.der"), &amd.vcek_der, PUBLIC_FILE)?;
    let tdx = l.tdx();
    dir::write(
        &tdx.join("root.pem"),
        cert_pem(&intel.root_der).as_bytes(),
        PUBLIC_FILE,
    )?;
    dir::write(
        &tdx.join("pck_chain.pem"),
        intel.pck_chain_pem().as_bytes(),
        PUBLIC_FILE,
    )?;
    let c = l.collateral();
    let tcb_chain = cert_pem(&intel.tcb_signing_der) + &cert_pem(&intel.root_der);
    let crl_chain = cert_pem(&intel.pck_ca_der) + &cert_pem(&intel.root_der);
    let collateral: [(String, &[u8]); 6] = [
        (
            format!("tcbinfo-{}.json", hex::encode(intel::FMSPC)),
            intel.tcb_info_json.as_bytes(),
        ),
        ("qe-identity.json".into(), intel.qe_identity_json.as_bytes()),
        ("tcb-signing-chain.pem".into(), tcb_chain.as_bytes()),
        ("root-ca-crl.der".into(), &intel.root_crl_der),
        ("pck-platform-crl.der".into(), &intel.pck_crl_der),
        ("pck-crl-issuer-chain.pem".into(), crl_chain.as_bytes()),
    ];
    for (name, bytes) in collateral {
        dir::write(&c.join(name), bytes, PUBLIC_FILE)?;
    }
    Ok(())
}

impl SimAmd {
    /// Load the simulated secure processor from a sim directory.
    pub fn load(sim_dir: &Path) -> Result<Self, SimError> {
        let l = Layout::new(sim_dir);
        let key = dir::read(&l.private().join("vcek.key.p8"))?;
        let vcek = dir::read(&l.snp().join("vcek.der"))?;
        let ask = dir::read_cert(&l.snp().join("ask.pem"))?;
        let ark = dir::read_cert(&l.snp().join("ark.pem"))?;
        SimAmd::from_parts(&key, &vcek, &ask, &ark)
    }
}

impl SimIntel {
    /// Load the simulated quoting enclave from a sim directory.
    pub fn load(sim_dir: &Path) -> Result<Self, SimError> {
        let l = Layout::new(sim_dir);
        let att = dir::read(&l.private().join("intel-attestation.key.p8"))?;
        let pck = dir::read(&l.private().join("intel-pck.key.p8"))?;
        let chain_path = l.tdx().join("pck_chain.pem");
        let chain = String::from_utf8(dir::read(&chain_path)?)
            .map_err(|_| SimError::io(&chain_path, "not UTF-8 text"))?;
        SimIntel::from_parts(&att, &pck, &chain)
    }
}

/// Both simulated TEEs of one sim directory.
#[derive(Debug)]
pub struct Simulator {
    /// The simulated AMD secure processor.
    pub amd: SimAmd,
    /// The simulated TDX quoting enclave.
    pub intel: SimIntel,
}

impl Simulator {
    /// Load both from a sim directory.
    pub fn load(sim_dir: &Path) -> Result<Self, SimError> {
        Ok(Simulator {
            amd: SimAmd::load(sim_dir)?,
            intel: SimIntel::load(sim_dir)?,
        })
    }
}
