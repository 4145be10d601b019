//! The simulated AMD key hierarchy: an ARK (RSA-4096, self-signed), an ASK (RSA-4096, signed by the ARK) and
//! a VCEK (ECDSA P-384, signed by the ASK), every certificate RSASSA-PSS SHA-384 with salt 48, built with the
//! [`der`] writer in AMD's shape: version 3, names `ARK-<product>` / `SEV-<product>` / `SEV-VCEK`, serial 0 on
//! the VCEK, and AMD's VCEK extensions (structVersion, productName1, the SPLs as INTEGERs, hwID as raw
//! bytes). Names say organization "cvm simulator", never AMD.

use super::der;
use super::drbg::Drbg;
use super::error::SimError;
use super::rsa::RsaKey;
use crate::snp::Product;
use crate::snp::chain::SIMULATOR_ORGANIZATION;

/// `rsassaPss` (RFC 4055).
const OID_RSASSA_PSS: &[u64] = &[1, 2, 840, 113549, 1, 1, 10];
/// `mgf1`.
const OID_MGF1: &[u64] = &[1, 2, 840, 113549, 1, 1, 8];
/// `sha384`.
const OID_SHA384: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
/// AMD's VCEK extensions live below `1.3.6.1.4.1.3704.1`.
const AMD_ARC: &[u64] = &[1, 3, 6, 1, 4, 1, 3704, 1];

/// RSA modulus size of the simulated ARK and ASK (AMD's are 4096 bits).
pub const AMD_RSA_BITS: usize = 4096;

/// Product facts the simulated firmware reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProductProfile {
    /// The product.
    pub product: Product,
    /// productName1 of the VCEK.
    pub product_name: &'static str,
    /// structVersion of the VCEK.
    pub struct_version: u8,
    /// CPUID family, model, stepping written into version 3+ reports.
    pub cpuid: (u8, u8, u8),
    /// The TCB_VERSION the simulated platform runs (current = reported = committed = launch).
    pub tcb: u64,
    /// Length of the VCEK's hwID (and of the non-zero part of CHIP_ID): 64, or 8 on Turin.
    pub hw_id_len: usize,
    /// Firmware version (major, minor, build).
    pub firmware: (u8, u8, u8),
}

impl ProductProfile {
    /// The profile for `product`.
    pub fn of(product: Product) -> Self {
        match product {
            // bl 4, tee 0, snp 24, ucode 219.
            Product::Milan => ProductProfile {
                product,
                product_name: "Milan-B0",
                struct_version: 0,
                cpuid: (0x19, 0x01, 0x01),
                tcb: 0xdb18_0000_0000_0004,
                hw_id_len: 64,
                firmware: (1, 55, 21),
            },
            // bl 9, tee 0, snp 23, ucode 72.
            Product::Genoa => ProductProfile {
                product,
                product_name: "Genoa-B1",
                struct_version: 0,
                cpuid: (0x19, 0x11, 0x01),
                tcb: 0x4817_0000_0000_0009,
                hw_id_len: 64,
                firmware: (1, 55, 40),
            },
            // fmc 1, bl 1, tee 0, snp 3, ucode 71.
            Product::Turin => ProductProfile {
                product,
                product_name: "Turin",
                struct_version: 1,
                cpuid: (0x1a, 0x02, 0x01),
                tcb: 0x4700_0000_0300_0101,
                hw_id_len: 8,
                firmware: (1, 55, 55),
            },
        }
    }

    /// The SPL extensions (arc under `…3704.1.3`, value) a VCEK for `tcb` carries, in AMD's order.
    pub fn spl_extensions(&self, tcb: u64) -> Vec<(u64, u8)> {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = tcb.to_le_bytes();
        match self.product {
            Product::Milan | Product::Genoa => vec![
                (1, b0),
                (2, b1),
                (4, b2),
                (5, b3),
                (6, b4),
                (7, b5),
                (3, b6),
                (8, b7),
            ],
            Product::Turin => vec![
                (9, b0),
                (1, b1),
                (2, b2),
                (3, b3),
                (5, b4),
                (6, b5),
                (7, b6),
                (8, b7),
            ],
        }
    }
}

/// What a simulated VCEK certifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcekSpec {
    /// productName1, e.g. `Milan-B0`.
    pub product_name: String,
    /// structVersion.
    pub struct_version: u8,
    /// hwID: the chip id (64 bytes, 8 on Turin).
    pub hw_id: Vec<u8>,
    /// SPL extensions: (arc under `1.3.6.1.4.1.3704.1.3`, value).
    pub spl: Vec<(u64, u8)>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// An X.501 name `O=cvm simulator, CN=<cn>`.
pub fn sim_name(cn: &str) -> Vec<u8> {
    let attr = |oid: &[u64], value: Vec<u8>| der::set(&[&der::seq(&[&der::oid(oid), &value])]);
    der::seq(&[
        &attr(&[2, 5, 4, 10], der::utf8(SIMULATOR_ORGANIZATION)),
        &attr(&[2, 5, 4, 3], der::utf8(cn)),
    ])
}

/// The RSASSA-PSS SHA-384 / MGF1-SHA-384 / salt 48 / trailer 1 AlgorithmIdentifier, as AMD writes it.
pub fn pss_sha384_algorithm() -> Vec<u8> {
    let sha384 = der::seq(&[&der::oid(OID_SHA384), &der::null()]);
    der::seq(&[
        &der::oid(OID_RSASSA_PSS),
        &der::seq(&[
            &der::context(0, true, &sha384),
            &der::context(1, true, &der::seq(&[&der::oid(OID_MGF1), &sha384])),
            &der::context(2, true, &der::u64_int(48)),
            &der::context(3, true, &der::u64_int(1)),
        ]),
    ])
}

fn extension(oid: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        der::seq(&[
            &der::oid(oid),
            &der::boolean(true),
            &der::octet_string(value),
        ])
    } else {
        der::seq(&[&der::oid(oid), &der::octet_string(value)])
    }
}

fn ca_extensions() -> Vec<Vec<u8>> {
    vec![
        // basicConstraints: CA
        extension(&[2, 5, 29, 19], true, &der::seq(&[&der::boolean(true)])),
        // keyUsage: keyCertSign, cRLSign
        extension(
            &[2, 5, 29, 15],
            true,
            &der::tlv(der::tag::BIT_STRING, &[1, 0x06]),
        ),
    ]
}

fn vcek_extensions(spec: &VcekSpec) -> Vec<Vec<u8>> {
    let amd = |sub: &[u64]| [AMD_ARC, sub].concat();
    let mut out = vec![
        extension(
            &amd(&[1]),
            false,
            &der::u64_int(u64::from(spec.struct_version)),
        ),
        extension(&amd(&[2]), false, &der::ia5(&spec.product_name)),
    ];
    for (arc, value) in &spec.spl {
        out.push(extension(
            &amd(&[3, *arc]),
            false,
            &der::u64_int(u64::from(*value)),
        ));
    }
    out.push(extension(&amd(&[4]), false, &spec.hw_id));
    out
}

/// The fields of one certificate to be signed.
struct Tbs<'a> {
    serial: &'a [u8],
    issuer: &'a [u8],
    subject: &'a [u8],
    not_before: i64,
    not_after: i64,
    spki: &'a [u8],
    extensions: Vec<Vec<u8>>,
}

fn tbs_der(t: &Tbs<'_>) -> Vec<u8> {
    let exts: Vec<&[u8]> = t.extensions.iter().map(Vec::as_slice).collect();
    der::seq(&[
        &der::context(0, true, &der::u64_int(2)),
        &der::uint(t.serial),
        &pss_sha384_algorithm(),
        t.issuer,
        &der::seq(&[&der::time(t.not_before), &der::time(t.not_after)]),
        t.subject,
        t.spki,
        &der::context(3, true, &der::seq(&exts)),
    ])
}

fn salt(drbg: &mut Drbg) -> [u8; 48] {
    let mut s = [0u8; 48];
    drbg.fill(&mut s);
    s
}

/// A simulated AMD CA (ARK or ASK): its RSA key, certificate and name.
#[derive(Debug)]
pub struct AmdCa {
    key: RsaKey,
    der: Vec<u8>,
    name: Vec<u8>,
}

impl AmdCa {
    /// A self-signed ARK `ARK-<product>` with a fresh key from `drbg`.
    pub fn ark(
        product: Product,
        drbg: &mut Drbg,
        not_before: i64,
        not_after: i64,
    ) -> Result<Self, SimError> {
        let key = RsaKey::generate(AMD_RSA_BITS, drbg)?;
        let name = sim_name(&format!("ARK-{}", product.name()));
        let tbs = tbs_der(&Tbs {
            serial: &[0x01, 0x00, 0x00],
            issuer: &name,
            subject: &name,
            not_before,
            not_after,
            spki: key.spki_der(),
            extensions: ca_extensions(),
        });
        let der = sign_cert(&key, tbs, drbg)?;
        Ok(AmdCa { key, der, name })
    }

    /// An ASK `SEV-<product>` with a fresh key from `drbg`, signed by `ark`.
    pub fn ask(
        product: Product,
        ark: &AmdCa,
        drbg: &mut Drbg,
        not_before: i64,
        not_after: i64,
    ) -> Result<Self, SimError> {
        let key = RsaKey::generate(AMD_RSA_BITS, drbg)?;
        let name = sim_name(&format!("SEV-{}", product.name()));
        let tbs = tbs_der(&Tbs {
            serial: &[0x01, 0x00, 0x01],
            issuer: &ark.name,
            subject: &name,
            not_before,
            not_after,
            spki: key.spki_der(),
            extensions: ca_extensions(),
        });
        let der = sign_cert(&ark.key, tbs, drbg)?;
        Ok(AmdCa { key, der, name })
    }

    /// A CA from its stored PKCS#1 key and certificate.
    pub fn load(pkcs1: &[u8], cert_der: &[u8]) -> Result<Self, SimError> {
        let key = RsaKey::from_pkcs1(pkcs1)?;
        let cert = crate::pki::parse_cert(cert_der)
            .map_err(|e| SimError::Invalid(format!("AMD CA certificate: {e}")))?;
        if cert.public_key().raw != key.spki_der() {
            return Err(SimError::Invalid(
                "the AMD CA key does not belong to its certificate".into(),
            ));
        }
        let name = cert.subject().as_raw().to_vec();
        Ok(AmdCa {
            key,
            der: cert_der.to_vec(),
            name,
        })
    }

    /// The certificate (DER).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The private key (PKCS#1 DER).
    pub fn key_pkcs1(&self) -> &[u8] {
        self.key.pkcs1_der()
    }

    /// Issue a VCEK (serial 0) for the P-384 public key `public_key` (SEC1 uncompressed point).
    pub fn issue_vcek(
        &self,
        spec: &VcekSpec,
        public_key: &[u8],
        drbg: &mut Drbg,
    ) -> Result<Vec<u8>, SimError> {
        let spki = der::seq(&[
            &der::seq(&[
                &der::oid(&[1, 2, 840, 10045, 2, 1]),
                &der::oid(&[1, 3, 132, 0, 34]),
            ]),
            &der::bit_string(public_key),
        ]);
        let tbs = tbs_der(&Tbs {
            serial: &[0],
            issuer: &self.name,
            subject: &sim_name("SEV-VCEK"),
            not_before: spec.not_before,
            not_after: spec.not_after,
            spki: &spki,
            extensions: vcek_extensions(spec),
        });
        sign_cert(&self.key, tbs, drbg)
    }

    /// A CRL from this CA listing the certificates with the given raw serial numbers (big-endian magnitude).
    pub fn crl(
        &self,
        revoked_serials: &[&[u8]],
        this_update: i64,
        next_update: i64,
        drbg: &mut Drbg,
    ) -> Result<Vec<u8>, SimError> {
        let entries: Vec<Vec<u8>> = revoked_serials
            .iter()
            .map(|s| der::seq(&[&der::uint(s), &der::time(this_update)]))
            .collect();
        let entries: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let mut parts: Vec<Vec<u8>> = vec![
            der::u64_int(1),
            pss_sha384_algorithm(),
            self.name.clone(),
            der::time(this_update),
            der::time(next_update),
        ];
        if !entries.is_empty() {
            parts.push(der::seq(&entries));
        }
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        sign_cert(&self.key, der::seq(&parts), drbg)
    }
}

/// `SEQUENCE { tbs, algorithm, BIT STRING signature }` with an RSASSA-PSS SHA-384 signature over `tbs`.
fn sign_cert(key: &RsaKey, tbs: Vec<u8>, drbg: &mut Drbg) -> Result<Vec<u8>, SimError> {
    let sig = key.sign_pss_sha384(&tbs, &salt(drbg))?;
    Ok(der::seq(&[
        &tbs,
        &pss_sha384_algorithm(),
        &der::bit_string(&sig),
    ]))
}
