//! A small P-256 CA for the attestation service (rcgen on ring): the CA certificate and key, a TLS server
//! certificate for given names (DNS names, or IP SANs when a name parses as an IP address), and an admin
//! client certificate (clientAuth) for the admin API's mutual TLS. Keys are PKCS#8 PEM files with mode 0600;
//! nothing is ever overwritten.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::fsutil;

/// File names written by [`init_ca`], in order.
pub const CA_FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "admin.pem",
    "admin.key",
];

/// Validity of the CA certificate, in years.
const CA_YEARS: i32 = 10;
/// Validity of the server and admin certificates, in years.
const LEAF_YEARS: i32 = 2;

/// Errors creating the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// No server name was given.
    #[error("at least one server name is needed")]
    NoServerName,
    /// A server name is neither a DNS name nor an IP address.
    #[error("invalid server name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// rcgen's reason.
        reason: String,
    },
    /// An output file exists already.
    #[error("{0}: already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

fn gen_err(e: rcgen::Error) -> CaError {
    CaError::Generate(e.to_string())
}

/// A PEM certificate and its PEM private key (zeroized on drop).
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: Zeroizing<String>,
}

/// A generated CA: certificate, key, and the means to issue certificates.
pub struct Ca {
    issued: Issued,
    issuer: Issuer<'static, KeyPair>,
}

/// Today's UTC date as (year, month, day), from the system clock.
fn today() -> (i32, u8, u8) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_from_days((secs / 86_400) as i64)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// Sets validity from today for `years` (day clamped to 28 so that every year has it).
fn set_validity(params: &mut CertificateParams, years: i32) {
    let (y, m, d) = today();
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut s = [0u8; 16];
    SystemRandom::new()
        .fill(&mut s)
        .map_err(|_| CaError::Generate("the system random generator failed".into()))?;
    s[0] &= 0x7f; // positive
    s[0] |= 0x01; // no leading zero byte
    Ok(SerialNumber::from_slice(&s))
}

fn new_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "cvm");
    dn
}

/// Accepts an IP address or a DNS name (RFC 1123 labels, optionally a leading `*.` wildcard).
fn check_server_name(name: &str) -> Result<(), &'static str> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    if host.is_empty() || name.len() > 253 {
        return Err("a DNS name must have 1 to 253 characters");
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("every DNS label must have 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("DNS labels may only contain letters, digits and '-'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("DNS labels may not start or end with '-'");
        }
    }
    Ok(())
}

impl Ca {
    /// Generates a new CA (P-256, valid for 10 years, may sign end-entity certificates only).
    pub fn generate(common_name_str: &str) -> Result<Self, CaError> {
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(common_name_str);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, CA_YEARS);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        };
        Ok(Self {
            issued,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate and key.
    pub fn certificate(&self) -> &Issued {
        &self.issued
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        cn: &str,
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, CaError> {
        let key = new_key()?;
        params.distinguished_name = common_name(cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, LEAF_YEARS);
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Issues a TLS server certificate (serverAuth) for `names`: DNS names, or IP SANs for names that parse as
    /// IP addresses. The first name is also the subject's common name.
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, CaError> {
        let first = names.first().ok_or(CaError::NoServerName)?;
        for name in names {
            check_server_name(name).map_err(|reason| CaError::InvalidName {
                name: name.clone(),
                reason: reason.to_string(),
            })?;
        }
        let params = CertificateParams::new(names.to_vec()).map_err(gen_err)?;
        self.issue(params, first, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Issues an admin client certificate (clientAuth) with common name `name`.
    pub fn issue_client(&self, name: &str) -> Result<Issued, CaError> {
        self.issue(
            CertificateParams::default(),
            name,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// The files written by [`init_ca`].
#[derive(Debug)]
pub struct CaPaths {
    /// Every file written, in [`CA_FILES`] order.
    pub files: Vec<PathBuf>,
}

/// Creates `out_dir` if needed and writes a new CA, a server certificate for `server_names` and an admin client
/// certificate: `ca.pem`, `ca.key`, `server.pem`, `server.key`, `admin.pem`, `admin.key`. Refuses (before
/// writing anything) if any of them exists. Keys get mode 0600, certificates 0644.
pub fn init_ca(out_dir: &Path, server_names: &[String]) -> Result<CaPaths, CaError> {
    if server_names.is_empty() {
        return Err(CaError::NoServerName);
    }
    let paths: Vec<PathBuf> = CA_FILES.iter().map(|f| out_dir.join(f)).collect();
    for p in &paths {
        if p.symlink_metadata().is_ok() {
            return Err(CaError::Exists(p.clone()));
        }
    }
    let ca = Ca::generate("cvm attestation CA")?;
    let server = ca.issue_server(server_names)?;
    let admin = ca.issue_client("cvm-admin")?;
    std::fs::create_dir_all(out_dir).map_err(|source| CaError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let contents: [(&str, bool); 6] = [
        (&ca.issued.cert_pem, false),
        (&ca.issued.key_pem, true),
        (&server.cert_pem, false),
        (&server.key_pem, true),
        (&admin.cert_pem, false),
        (&admin.key_pem, true),
    ];
    for (path, (data, secret)) in paths.iter().zip(contents) {
        let r = if secret {
            fsutil::write_new_private(path, data.as_bytes())
        } else {
            fsutil::write_new_public(path, data.as_bytes())
        };
        r.map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                CaError::Exists(path.clone())
            } else {
                CaError::Io {
                    path: path.clone(),
                    source,
                }
            }
        })?;
    }
    Ok(CaPaths { files: paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_days_to_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn writes_six_files_with_private_keys_0600_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ca");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let paths = init_ca(&out, &names).unwrap();
        assert_eq!(paths.files.len(), 6);
        for p in &paths.files {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let name = p.file_name().unwrap().to_str().unwrap();
            if name.ends_with(".key") {
                assert_eq!(mode, 0o600, "{name}");
                assert!(std::fs::read_to_string(p).unwrap().contains("PRIVATE KEY"));
            } else {
                assert!(
                    std::fs::read_to_string(p)
                        .unwrap()
                        .contains("BEGIN CERTIFICATE")
                );
            }
        }
        assert!(matches!(init_ca(&out, &names), Err(CaError::Exists(_))));
    }

    #[test]
    fn refuses_an_invalid_server_name() {
        let ca = Ca::generate("t").unwrap();
        assert!(matches!(
            ca.issue_server(&["bad name".to_string()]),
            Err(CaError::InvalidName { .. })
        ));
    }
}
