//! X.509 for both vendors' chains: reading PEM/DER bundles, checking one certificate's (or CRL's) signature
//! against its issuer's key with `ring`, validity windows at a given time, and CRLs. Callers map [`PkiError`]
//! to their own reason codes (a broken PCK chain is `CHAIN_INVALID`, a broken TCB signing chain is
//! `COLLATERAL_CHAIN_INVALID`).
//!
//! AMD's VCEK/VLEK certificates have serial number 0, which RFC 5280 forbids; x509-parser accepts it and so
//! do we: the serial plays no part in the trust decision.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_HASH_SHA384,
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// What went wrong with a certificate, a CRL or a signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// The bytes are not a DER certificate or a PEM bundle of them.
    #[error("not a certificate: {0}")]
    BadCertificate(String),
    /// The bytes are not a DER CRL (or PEM X509 CRL).
    #[error("not a CRL: {0}")]
    BadCrl(String),
    /// The signature algorithm (or its parameters, or the key type) is not one we accept.
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// The signature does not verify under the issuer's key.
    #[error("signature does not verify")]
    BadSignature,
    /// Valid only after `not_before` (Unix seconds).
    #[error("not valid before {}", rfc3339(*not_before))]
    NotYetValid {
        /// Start of validity, Unix seconds.
        not_before: i64,
    },
    /// Valid only until `not_after` (Unix seconds).
    #[error("expired at {}", rfc3339(*not_after))]
    Expired {
        /// End of validity, Unix seconds.
        not_after: i64,
    },
}

/// Unix seconds as RFC 3339 (UTC), for messages and claims.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// Parse an RFC 3339 time (e.g. `2026-11-22T00:00:00Z`) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Split a file's bytes into DER certificates: one DER certificate, or any number of PEM `CERTIFICATE` blocks.
pub fn certs_from_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    if bytes.first() == Some(&0x30) {
        parse_cert(bytes)?;
        return Ok(vec![bytes.to_vec()]);
    }
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| PkiError::BadCertificate(format!("PEM: {e}")))?;
        if pem.label == "CERTIFICATE" {
            parse_cert(&pem.contents)?;
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err(PkiError::BadCertificate(
            "no DER certificate and no PEM CERTIFICATE block found".into(),
        ));
    }
    Ok(out)
}

/// Parse one DER certificate; trailing bytes are refused.
pub fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(PkiError::BadCertificate(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        ))),
        Err(e) => Err(PkiError::BadCertificate(e.to_string())),
    }
}

/// The DER of a CRL given as DER or as a PEM `X509 CRL` block.
pub fn crl_der_from_bytes(bytes: &[u8]) -> Result<Vec<u8>, PkiError> {
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| PkiError::BadCrl(format!("PEM: {e}")))?;
        if pem.label == "X509 CRL" {
            return Ok(pem.contents);
        }
    }
    Err(PkiError::BadCrl(
        "no DER CRL and no PEM X509 CRL block found".into(),
    ))
}

/// Parse one DER CRL; trailing bytes are refused.
pub fn parse_crl(der: &[u8]) -> Result<CertificateRevocationList<'_>, PkiError> {
    match CertificateRevocationList::from_der(der) {
        Ok(([], crl)) => Ok(crl),
        Ok((rest, _)) => Err(PkiError::BadCrl(format!(
            "{} trailing bytes after the CRL",
            rest.len()
        ))),
        Err(e) => Err(PkiError::BadCrl(e.to_string())),
    }
}

/// Check that `cert` was signed by the holder of `issuer_key`.
pub fn verify_cert_signature(
    cert: &X509Certificate<'_>,
    issuer_key: &SubjectPublicKeyInfo<'_>,
) -> Result<(), PkiError> {
    verify_signature(
        &cert.signature_algorithm,
        issuer_key,
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    )
}

/// Check that `crl` was signed by the holder of `issuer_key`.
pub fn verify_crl_signature(
    crl: &CertificateRevocationList<'_>,
    issuer_key: &SubjectPublicKeyInfo<'_>,
) -> Result<(), PkiError> {
    verify_signature(
        &crl.signature_algorithm,
        issuer_key,
        crl.tbs_cert_list.as_ref(),
        &crl.signature_value.data,
    )
}

/// Verify `sig` over `message` with `key` under the X.509 algorithm `alg`. Accepted: ECDSA with SHA-256 or
/// SHA-384 on P-256 or P-384 keys, and RSASSA-PSS with SHA-384, MGF1-SHA-384 and salt 48 (AMD's choice).
pub fn verify_signature(
    alg: &AlgorithmIdentifier<'_>,
    key: &SubjectPublicKeyInfo<'_>,
    message: &[u8],
    sig: &[u8],
) -> Result<(), PkiError> {
    let ring_alg = ring_algorithm(alg, key)?;
    UnparsedPublicKey::new(ring_alg, &key.subject_public_key.data)
        .verify(message, sig)
        .map_err(|_| PkiError::BadSignature)
}

fn ring_algorithm(
    alg: &AlgorithmIdentifier<'_>,
    key: &SubjectPublicKeyInfo<'_>,
) -> Result<&'static dyn VerificationAlgorithm, PkiError> {
    let unsupported =
        |what: &str| PkiError::UnsupportedAlgorithm(format!("{what} ({})", alg.algorithm));
    let key_alg = &key.algorithm.algorithm;
    if alg.algorithm == OID_PKCS1_RSASSAPSS {
        if *key_alg != OID_PKCS1_RSAENCRYPTION && *key_alg != OID_PKCS1_RSASSAPSS {
            return Err(unsupported("RSASSA-PSS signature with a non-RSA key"));
        }
        let Ok(SignatureAlgorithm::RSASSA_PSS(params)) = SignatureAlgorithm::try_from(alg) else {
            return Err(unsupported("RSASSA-PSS without parameters"));
        };
        // RFC 4055 §3.1: ring's PSS verifier fixes MGF1 to the message hash and the salt to its length.
        let mgf_hash_ok = params
            .mask_gen_algorithm()
            .map(|m| m.hash == OID_NIST_HASH_SHA384)
            .unwrap_or(false);
        if *params.hash_algorithm_oid() != OID_NIST_HASH_SHA384
            || !mgf_hash_ok
            || params.salt_length() != 48
            || params.trailer_field() != 1
        {
            return Err(unsupported(
                "RSASSA-PSS other than SHA-384/MGF1-SHA-384/salt 48",
            ));
        }
        return Ok(&signature::RSA_PSS_2048_8192_SHA384);
    }
    if *key_alg != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(unsupported("signature key type"));
    }
    let curve = key
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .ok_or_else(|| unsupported("EC key without a named curve"))?;
    let p256 = curve == OID_EC_P256;
    let p384 = curve == OID_NIST_EC_P384;
    Ok(match (&alg.algorithm, p256, p384) {
        (a, true, _) if *a == OID_SIG_ECDSA_WITH_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        (a, true, _) if *a == OID_SIG_ECDSA_WITH_SHA384 => &signature::ECDSA_P256_SHA384_ASN1,
        (a, _, true) if *a == OID_SIG_ECDSA_WITH_SHA256 => &signature::ECDSA_P384_SHA256_ASN1,
        (a, _, true) if *a == OID_SIG_ECDSA_WITH_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
        _ => return Err(unsupported("ECDSA hash/curve combination")),
    })
}

/// Check `cert`'s validity window at `at` (Unix seconds); both ends are inclusive (RFC 5280 §4.1.2.5).
pub fn check_validity(cert: &X509Certificate<'_>, at: i64) -> Result<(), PkiError> {
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    if at < not_before {
        return Err(PkiError::NotYetValid { not_before });
    }
    if at > not_after {
        return Err(PkiError::Expired { not_after });
    }
    Ok(())
}

/// Whether `crl` lists the certificate with this raw serial number.
pub fn crl_lists(crl: &CertificateRevocationList<'_>, raw_serial: &[u8]) -> bool {
    let want = strip_leading_zeros(raw_serial);
    crl.iter_revoked_certificates()
        .any(|r| strip_leading_zeros(r.raw_serial()) == want)
}

fn strip_leading_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// Whether `cert` is a CA certificate: basicConstraints CA:TRUE (RFC 5280 §4.2.1.9).
pub fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

/// The subject's Organization (O) attribute, if any.
pub fn subject_organization(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> std::path::PathBuf {
        std::env::var_os("CVM_VECTORS")
            .map(Into::into)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
            })
    }

    #[test]
    fn verifies_amd_rsa_pss_chain_and_intel_ecdsa_root() {
        let bundle = std::fs::read(vectors().join("snp/milan-ark-ask.pem")).unwrap();
        let ders = certs_from_bytes(&bundle).unwrap();
        assert_eq!(ders.len(), 2);
        let ask = parse_cert(&ders[0]).unwrap();
        let ark = parse_cert(&ders[1]).unwrap();
        verify_cert_signature(&ask, ark.public_key()).unwrap();
        verify_cert_signature(&ark, ark.public_key()).unwrap();
        assert_eq!(
            verify_cert_signature(&ark, ask.public_key()),
            Err(PkiError::BadSignature)
        );

        let root_der = std::fs::read(vectors().join("tdx/intel-sgx-root-ca.der")).unwrap();
        let root = parse_cert(&root_der).unwrap();
        verify_cert_signature(&root, root.public_key()).unwrap();
        assert_eq!(
            subject_organization(&root).as_deref(),
            Some("Intel Corporation")
        );
    }

    #[test]
    fn accepts_amd_serial_zero_vcek_and_checks_validity() {
        let der = std::fs::read(vectors().join("snp/milan-virtee-vcek.der")).unwrap();
        let vcek = parse_cert(&der).unwrap();
        assert_eq!(vcek.raw_serial(), &[0u8][..]);
        let nb = vcek.validity().not_before.timestamp();
        let na = vcek.validity().not_after.timestamp();
        assert_eq!(check_validity(&vcek, nb), Ok(()));
        assert_eq!(check_validity(&vcek, na), Ok(()));
        assert_eq!(
            check_validity(&vcek, nb - 1),
            Err(PkiError::NotYetValid { not_before: nb })
        );
        assert_eq!(
            check_validity(&vcek, na + 1),
            Err(PkiError::Expired { not_after: na })
        );
    }

    #[test]
    fn refuses_trailing_bytes_and_garbage() {
        let mut der = std::fs::read(vectors().join("tdx/intel-sgx-root-ca.der")).unwrap();
        der.push(0);
        assert!(matches!(parse_cert(&der), Err(PkiError::BadCertificate(_))));
        assert!(certs_from_bytes(b"hello").is_err());
    }

    #[test]
    fn time_round_trips_through_rfc3339() {
        let t = parse_rfc3339("2026-11-22T00:00:00Z").unwrap();
        assert_eq!(rfc3339(t), "2026-11-22T00:00:00Z");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
