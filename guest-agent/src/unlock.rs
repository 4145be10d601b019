//! The client flow: attest with fresh evidence, receive the released secret, unlock the workload's data.
//!
//! Each attempt takes a challenge, makes a fresh HPKE key pair (zeroized on drop), binds it with
//! `cvm_keys::binding::report_data`, asks the provider for evidence, attests and opens the secret (the
//! steps of `cvm_attest::client::Client::fetch_secret`, with their own limits). The network exchanges
//! (connect and challenge; attest) each have the per-attempt limit; evidence is collected on a thread of its
//! own with its longer limit, so that a quote that takes the kernel's full 30 s (an SNP report up to 60 s
//! when the host throttles) neither stalls the runtime nor times the attempt out and starts over with fresh
//! evidence. Connection errors, network timeouts, HTTP 5xx and 429 are retried with exponential backoff and
//! jitter; a refusal (any other status) and an evidence failure never are.

use crate::provider::{Provider, Source};
use cvm_attest::client::{Client, ClientError, Evidence, EvidenceSource, open_secret, tls_config};
use cvm_attest::protocol::AttestRequest;
use cvm_keys::Key256;
use cvm_keys::hpke::HpkeKeyPair;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// The default limit on collecting evidence: above the kernel's own limits (30 s for a TDX quote, 60 s of
/// SNP throttling) and the TDX retries' budget ([`crate::retry::Backoff::TDX_QUOTE`]).
pub const EVIDENCE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where and how to attest.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `https://HOST:PORT`.
    pub server: String,
    /// The service's CA certificate (PEM), the only trust anchor.
    pub ca: PathBuf,
    /// The secret's name.
    pub resource: String,
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The first backoff delay; doubled after each retried failure.
    pub backoff: Duration,
    /// The longest backoff delay.
    pub max_backoff: Duration,
    /// The limit on each network exchange of an attempt (connect and challenge; attest).
    pub timeout: Duration,
    /// The limit on collecting evidence from the TEE.
    pub evidence_timeout: Duration,
    /// Send the provider's certificates (SNP: VCEK first) with the evidence; off when the service holds them.
    pub send_certs: bool,
    /// The protocol: cvm's own (`/v1`, CBOR) or the KBS protocol (`/kbs/v0`, Trustee's and ours).
    pub protocol: Protocol,
}

/// The attestation protocol the agent speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// cvm's protocol (`/v1/challenge`, `/v1/attest`; HPKE).
    #[default]
    Cvm,
    /// The KBS protocol (`/kbs/v0/auth`, `/attest`, `/resource`; JWE), as Confidential Containers guests
    /// speak it: `cvm-attest serve` with `[kbs] enabled = true`, or Trustee's KBS.
    Kbs,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cvm" => Ok(Protocol::Cvm),
            "kbs" => Ok(Protocol::Kbs),
            other => Err(format!("unknown protocol {other:?}: expected cvm or kbs")),
        }
    }
}

impl ServerOptions {
    /// Options with the defaults: 8 attempts, backoff 0.5 s doubling up to 30 s, 30 s per network exchange,
    /// [`EVIDENCE_TIMEOUT`] for evidence.
    pub fn new(server: &str, ca: &Path, resource: &str) -> Self {
        ServerOptions {
            server: server.into(),
            ca: ca.to_owned(),
            resource: resource.into(),
            attempts: 8,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            evidence_timeout: EVIDENCE_TIMEOUT,
            send_certs: true,
            protocol: Protocol::Cvm,
        }
    }
}

/// A refusal by the server, with what a person can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{server} refused resource {resource:?} (HTTP {status}, {code}): {message}\n  what to do: {hint}"
)]
pub struct Refusal {
    /// The server URL.
    pub server: String,
    /// The resource asked for.
    pub resource: String,
    /// The HTTP status.
    pub status: u16,
    /// The reason code.
    pub code: String,
    /// The server's explanation.
    pub message: String,
    /// What a person can do about it.
    pub hint: String,
}

/// Why the agent could not unlock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Bad arguments or configuration.
    #[error("{0}")]
    Usage(String),
    /// The evidence provider failed.
    #[error("evidence provider {provider}: {message}")]
    Evidence {
        /// Which provider.
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// The server refused; the refusal says what to do.
    #[error("{0}")]
    Refused(Box<Refusal>),
    /// TLS could not be set up or the server's certificate was not trusted.
    #[error("TLS with {server}: {message}\n  what to do: {hint}")]
    Tls {
        /// The server URL.
        server: String,
        /// What went wrong.
        message: String,
        /// What a person can do about it.
        hint: String,
    },
    /// Every attempt failed with a transient error.
    #[error(
        "{server} unreachable after {attempts} attempt(s); last error: {last}\n  what to do: check that the service runs and the guest's network reaches it"
    )]
    Unreachable {
        /// The server URL.
        server: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The released secret could not be used.
    #[error("released secret for {resource:?}: {message}")]
    Secret {
        /// The resource.
        resource: String,
        /// What was wrong.
        message: String,
    },
    /// Unsealing failed; nothing was written to the output path.
    #[error("unseal {input} → {output}: {source}")]
    Unseal {
        /// The sealed input.
        input: PathBuf,
        /// The output.
        output: String,
        /// The error.
        source: cvm_keys::seal::SealError,
    },
    /// `cryptsetup` refused the key or the device.
    #[error(
        "LUKS {device}: {message}\n  what to do: check that the secret registered for this resource is the \
             device's key (cryptsetup luksAddKey --key-file)"
    )]
    Luks {
        /// The device.
        device: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An output exists and `--force` was not given.
    #[error("{path} exists: refusing to replace it (pass --force to replace it)")]
    OutputExists {
        /// The output.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl AgentError {
    /// The process exit code: 3 refused, 4 unreachable, 5 evidence provider, 2 usage (and an output that
    /// exists without `--force`), 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Usage(_) | AgentError::OutputExists { .. } => 2,
            AgentError::Refused(_) | AgentError::Tls { .. } => 3,
            AgentError::Unreachable { .. } => 4,
            AgentError::Evidence { .. } => 5,
            _ => 1,
        }
    }
}

/// What to do about a refusal code.
pub fn hint(code: &str, resource: &str) -> String {
    match code {
        "POLICY_MEASUREMENT" => "the guest's launch measurement is not in the resource's policy: register the value \
             printed by `cvm-launch measure` for this image in the secret's policy, or boot the registered image"
            .into(),
        "UNKNOWN_RESOURCE" => format!(
            "the server holds no secret {resource:?}: check --resource, or register it with \
             `cvm-attest admin` (PUT /v1/admin/secrets/{resource})"
        ),
        "POLICY_DEBUG" => "the guest was launched with debugging allowed: launch it without debug, or set \
             allow_debug = true in the policy (never in production)"
            .into(),
        "POLICY_VMPL" => "the report comes from a VMPL the policy does not accept: run the agent at VMPL 0 or \
             widen the policy"
            .into(),
        "POLICY_HOST_DATA" | "POLICY_REPORT_DATA" => {
            "the guest's HOST_DATA/REPORT_DATA do not match the policy: check the launch configuration".into()
        }
        "POLICY_TCB" | "TCB_OUT_OF_DATE" | "TCB_REVOKED" | "TCB_UNKNOWN" | "TCB_MISMATCH" => {
            "the platform's firmware TCB is not accepted: update the host firmware/microcode or adjust the \
             policy's minimum TCB"
                .into()
        }
        "SIMULATED_NOT_ALLOWED" => "the server does not accept simulated evidence: run in a real TEE, or use \
             a test server with mode = \"simulated\""
            .into(),
        "NONCE_INVALID" | "NONCE_EXPIRED" | "NONCE_REPLAYED" => {
            "the challenge was not accepted: check the guest clock and that no proxy replays requests, then rerun"
                .into()
        }
        "BINDING_MISMATCH" => "the evidence does not carry this request's binding: the evidence provider \
             returned a stale or foreign report (is another process using the same configfs-tsm entry?)"
            .into(),
        "SIGNATURE_INVALID" | "CHAIN_INVALID" | "UNTRUSTED_ROOT" | "CERT_EXPIRED" | "CERT_NOT_YET_VALID"
        | "CERT_REVOKED" | "CHIP_ID_MISMATCH" => "the evidence is not signed by a key the server trusts: \
             check that the guest runs on genuine hardware and that the server trusts this platform's vendor \
             roots; if the server holds this platform's certificates, retry with --omit-certs"
            .into(),
        "COLLATERAL_MISSING" | "COLLATERAL_EXPIRED" => {
            "the server lacks current collateral for this platform: refresh the server's collateral".into()
        }
        "UNSUPPORTED_TEE_TYPE" => "the server does not accept this TEE type: pass --tee explicitly".into(),
        _ => "read the server's message above; the server's audit log has the details".into(),
    }
}

enum Failure {
    Retry(String),
    Fatal(AgentError),
}

fn classify(opts: &ServerOptions, provider: &dyn Provider, e: ClientError) -> Failure {
    match e {
        ClientError::Io(m) => {
            if m.contains("certificate") || m.contains("CertificateRequired") {
                Failure::Fatal(AgentError::Tls {
                    server: opts.server.clone(),
                    message: m,
                    hint: format!(
                        "the server's certificate does not chain to {} (or does not name this host): pass the \
                         CA that signed the service's certificate with --ca",
                        opts.ca.display()
                    ),
                })
            } else {
                Failure::Retry(m)
            }
        }
        ClientError::Refused {
            status,
            code,
            message,
        } => {
            if status >= 500 || status == 429 {
                Failure::Retry(format!("HTTP {status} {code}: {message}"))
            } else {
                Failure::Fatal(AgentError::Refused(Box::new(Refusal {
                    server: opts.server.clone(),
                    resource: opts.resource.clone(),
                    status,
                    hint: hint(&code, &opts.resource),
                    code,
                    message,
                })))
            }
        }
        ClientError::Evidence(m) => Failure::Fatal(AgentError::Evidence {
            provider: provider.describe(),
            message: m,
        }),
        ClientError::Url(u) => Failure::Fatal(AgentError::Usage(format!(
            "bad --server {u:?}: expected https://HOST:PORT"
        ))),
        ClientError::Tls(t) => Failure::Fatal(AgentError::Tls {
            server: opts.server.clone(),
            message: t.to_string(),
            hint: format!("check --ca {}", opts.ca.display()),
        }),
        ClientError::Open(m) => Failure::Fatal(AgentError::Secret {
            resource: opts.resource.clone(),
            message: m,
        }),
        other => Failure::Retry(other.to_string()),
    }
}

/// The backoff delay before attempt `n + 1`: `base · 2^(n−1)` capped at `max`, then jittered to 50–100 %.
pub fn backoff_delay(base: Duration, max: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let d = exp.min(max);
    let mut r = [0u8; 2];
    let frac = match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r) {
        Ok(()) => f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    d.mul_f64(0.5 + frac / 2.0)
}

/// Collects evidence on a thread of its own, waiting at most `limit` (the thread cannot be stopped inside
/// the kernel; one that outlives the limit ends with the process).
pub(crate) async fn collect(
    provider: Arc<dyn Provider>,
    report_data: [u8; 64],
    send_certs: bool,
    limit: Duration,
) -> Result<Evidence, ClientError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cvm-agent-evidence".into())
        .spawn(move || {
            let source = Source {
                provider: provider.as_ref(),
                send_certs,
            };
            // The receiver is gone only when the limit passed; the answer is then of no use.
            let _ = tx.send(source.evidence(&report_data));
        })
        .map_err(|e| ClientError::Evidence(format!("start the evidence thread: {e}")))?;
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(answer)) => answer.map_err(ClientError::Evidence),
        Ok(Err(_)) => Err(ClientError::Evidence(
            "the evidence thread ended without an answer".into(),
        )),
        Err(_) => Err(ClientError::Evidence(format!(
            "no evidence within {} s (--evidence-timeout-secs): the TEE or the host's quoting service \
             did not answer",
            limit.as_secs()
        ))),
    }
}

/// One attempt: challenge, key pair, evidence, attest, open.
async fn attempt(
    opts: &ServerOptions,
    client: &mut Client,
    provider: &Arc<dyn Provider>,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let timed_out =
        |what: &str| ClientError::Io(format!("{what} timed out after {:?}", opts.timeout));
    let challenge = tokio::time::timeout(opts.timeout, client.challenge(&opts.resource))
        .await
        .map_err(|_| timed_out("challenge"))??;
    let keys = HpkeKeyPair::generate().map_err(|e| ClientError::Evidence(e.to_string()))?;
    let report_data = cvm_keys::binding::report_data(
        &challenge.nonce,
        keys.public_key(),
        opts.resource.as_bytes(),
    );
    let evidence = collect(
        provider.clone(),
        report_data,
        opts.send_certs,
        opts.evidence_timeout,
    )
    .await?;
    let request = AttestRequest {
        resource: opts.resource.clone(),
        nonce: challenge.nonce,
        tee: evidence.tee,
        evidence: evidence.evidence,
        certs: evidence.certs,
        hpke_public_key: keys.public_key().to_vec(),
    };
    let resp = tokio::time::timeout(opts.timeout, client.attest(&request))
        .await
        .map_err(|_| timed_out("attest"))??;
    open_secret(&keys, &opts.resource, &resp.secret)
}

/// Attests with `provider` and returns the released secret.
pub async fn fetch(
    opts: &ServerOptions,
    provider: Arc<dyn Provider>,
) -> Result<Zeroizing<Vec<u8>>, AgentError> {
    let tls = tls_config(&opts.ca, None).map_err(|e| AgentError::Tls {
        server: opts.server.clone(),
        message: e.to_string(),
        hint: format!(
            "--ca {} must be the service's CA certificate (PEM)",
            opts.ca.display()
        ),
    })?;
    let attempts = opts.attempts.max(1);
    let mut last = String::new();
    for n in 1..=attempts {
        let mut client = Client::new(&opts.server, tls.clone()).map_err(|e| match e {
            ClientError::Url(u) => {
                AgentError::Usage(format!("bad --server {u:?}: expected https://HOST:PORT"))
            }
            other => AgentError::Usage(other.to_string()),
        })?;
        let result = match opts.protocol {
            Protocol::Cvm => attempt(opts, &mut client, &provider).await,
            Protocol::Kbs => crate::kbs::attempt(opts, &mut client, &provider).await,
        };
        let err = match result {
            Ok(secret) => return Ok(secret),
            Err(e) => e,
        };
        match classify(opts, provider.as_ref(), err) {
            Failure::Fatal(e) => return Err(e),
            Failure::Retry(m) => {
                last = m;
                if n < attempts {
                    let d = backoff_delay(opts.backoff, opts.max_backoff, n);
                    eprintln!(
                        "cvm-agent: attempt {n}/{attempts} to {} failed ({last}); retrying in {:.1} s",
                        opts.server,
                        d.as_secs_f64()
                    );
                    tokio::time::sleep(d).await;
                }
            }
        }
    }
    Err(AgentError::Unreachable {
        server: opts.server.clone(),
        attempts,
        last,
    })
}

/// What to do with the released secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unlocker {
    /// Unseal a sealed file (the secret is its 256-bit key) to a path, or to stdout for `-`.
    Sealed {
        /// The sealed file.
        input: PathBuf,
        /// The plaintext's path, or `-` for stdout.
        output: String,
        /// Replace an existing output (`--force`).
        force: bool,
    },
    /// Write the secret itself to a file (mode 0600, written atomically).
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Replace an existing file (`--force`).
        force: bool,
    },
    /// Open a LUKS2 device with the secret as its key (given to `cryptsetup` on stdin, never in argv).
    Luks {
        /// The block device.
        device: PathBuf,
        /// The device-mapper name (`/dev/mapper/NAME`).
        name: String,
        /// Only check the key (`cryptsetup open --test-passphrase`), map nothing.
        check: bool,
        /// Mount the opened mapping on this directory.
        mount: Option<PathBuf>,
        /// The `cryptsetup` program.
        cryptsetup: PathBuf,
    },
    /// Only check that the secret is released.
    Nothing,
}

impl Unlocker {
    /// Checks what can be checked before attesting: the sealed input is readable, and an output that
    /// exists is only there to be replaced with `--force`.
    pub fn preflight(&self) -> Result<(), AgentError> {
        let fresh = |path: &Path, force: bool| {
            if !force && path.symlink_metadata().is_ok() {
                return Err(AgentError::OutputExists {
                    path: path.to_owned(),
                });
            }
            Ok(())
        };
        match self {
            Unlocker::Sealed {
                input,
                output,
                force,
            } => {
                std::fs::File::open(input).map_err(|source| AgentError::Io {
                    what: format!("open sealed input {}", input.display()),
                    source,
                })?;
                if output != "-" {
                    fresh(Path::new(output), *force)?;
                }
                Ok(())
            }
            Unlocker::SecretFile { path, force } => fresh(path, *force),
            Unlocker::Luks { .. } | Unlocker::Nothing => Ok(()),
        }
    }

    /// Applies the released `secret` for `resource`.
    pub fn apply(&self, resource: &str, secret: &[u8]) -> Result<String, AgentError> {
        match self {
            Unlocker::Nothing => Ok(format!(
                "secret {resource:?} released ({} bytes)",
                secret.len()
            )),
            Unlocker::Luks {
                device,
                name,
                check,
                mount,
                cryptsetup,
            } => {
                luks_open(cryptsetup, device, name, *check, secret)?;
                if *check {
                    return Ok(format!(
                        "the key of {resource:?} opens {}",
                        device.display()
                    ));
                }
                let opened = format!("{} opened as /dev/mapper/{name}", device.display());
                match mount {
                    None => Ok(opened),
                    Some(dir) => {
                        mount_mapping(name, dir)?;
                        Ok(format!("{opened}, mounted on {}", dir.display()))
                    }
                }
            }
            Unlocker::SecretFile { path, force } => {
                cvm_keys::fsutil::write_private_atomically(path, secret, *force).map_err(
                    |source| match source.kind() {
                        std::io::ErrorKind::AlreadyExists => {
                            AgentError::OutputExists { path: path.clone() }
                        }
                        _ => AgentError::Io {
                            what: format!("write {}", path.display()),
                            source,
                        },
                    },
                )?;
                Ok(format!(
                    "secret {resource:?} written to {} (mode 0600)",
                    path.display()
                ))
            }
            Unlocker::Sealed {
                input,
                output,
                force,
            } => {
                let key = secret_to_key(resource, secret)?;
                let file = std::fs::File::open(input).map_err(|source| AgentError::Io {
                    what: format!("open sealed input {}", input.display()),
                    source,
                })?;
                let reader = std::io::BufReader::with_capacity(256 * 1024, file);
                let unseal_err = |source| AgentError::Unseal {
                    input: input.clone(),
                    output: output.clone(),
                    source,
                };
                let summary = if output == "-" {
                    let stdout = std::io::stdout();
                    let w = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
                    cvm_keys::seal::unseal_stream(&key, reader, w).map_err(unseal_err)?
                } else {
                    cvm_keys::seal::unseal_to_path(&key, reader, Path::new(output), *force)
                        .map_err(unseal_err)?
                };
                Ok(format!(
                    "unsealed {} → {} ({} bytes)",
                    input.display(),
                    output,
                    summary.plaintext_bytes
                ))
            }
        }
    }
}

/// Runs `cryptsetup open --type luks2 --key-file=- DEVICE NAME` (or `--test-passphrase` for a check) with
/// `key` on its stdin.
pub fn luks_open(
    cryptsetup: &Path,
    device: &Path,
    name: &str,
    check: bool,
    key: &[u8],
) -> Result<(), AgentError> {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(cryptsetup);
    cmd.args(["open", "--type", "luks2", "--key-file=-"]);
    if check {
        cmd.arg("--test-passphrase").arg(device);
    } else {
        cmd.arg(device).arg(name);
    }
    let what = format!("{} open {}", cryptsetup.display(), device.display());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| AgentError::Io {
            what: what.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error (cryptsetup exited early) shows in its status below.
        let _ = stdin.write_all(key);
    }
    let out = child.wait_with_output().map_err(|source| AgentError::Io {
        what: what.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(AgentError::Luks {
        device: device.to_owned(),
        message: format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Mounts `/dev/mapper/NAME` on `dir` (created if missing) with the `mount` program; the filesystem type is
/// the one `mount` detects.
fn mount_mapping(name: &str, dir: &Path) -> Result<(), AgentError> {
    let device = format!("/dev/mapper/{name}");
    let what = format!("mount {device} {}", dir.display());
    std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
        what: format!("create the mount point {}", dir.display()),
        source,
    })?;
    let out = std::process::Command::new("mount")
        .arg(&device)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| AgentError::Io {
            what: what.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(AgentError::Io {
        what,
        source: std::io::Error::other(format!(
            "{} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            "the volume is open; check its filesystem and the mount point"
        )),
    })
}

/// The sealed-file key in a released secret: 32 raw bytes, or the contents of a key file.
pub fn secret_to_key(resource: &str, secret: &[u8]) -> Result<Key256, AgentError> {
    if let Ok(raw) = <[u8; 32]>::try_from(secret) {
        return Ok(Key256::from_bytes(raw));
    }
    Key256::from_file_contents(secret).map_err(|e| AgentError::Secret {
        resource: resource.into(),
        message: format!(
            "is not a 256-bit key ({} bytes; {e}): register the sealing key file as the secret",
            secret.len()
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        for n in 1..10 {
            let d = backoff_delay(b, m, n);
            let full = (b * (1 << (n - 1))).min(m);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?}");
        }
    }

    struct Dummy;
    impl Provider for Dummy {
        fn describe(&self) -> String {
            "dummy".into()
        }
        fn evidence(
            &self,
            _: &[u8; 64],
        ) -> Result<cvm_attest::client::Evidence, crate::provider::ProviderError> {
            Err(crate::provider::ProviderError::None("dummy".into()))
        }
    }

    fn refused(status: u16) -> ClientError {
        ClientError::Refused {
            status,
            code: "X".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let o = ServerOptions::new("https://127.0.0.1:1", Path::new("ca.pem"), "r");
        let retried = |e| matches!(classify(&o, &Dummy, e), Failure::Retry(_));
        assert!(retried(refused(500)));
        assert!(retried(refused(503)));
        assert!(retried(refused(429)));
        assert!(!retried(refused(400)));
        assert!(!retried(refused(403)));
        assert!(!retried(refused(404)));
        assert!(retried(ClientError::Io(
            "Connection refused (os error 111)".into()
        )));
        assert!(!retried(ClientError::Io(
            "invalid peer certificate: UnknownIssuer".into()
        )));
        assert!(!retried(ClientError::Evidence("no device".into())));
        assert!(!retried(ClientError::Open("bad tag".into())));
        assert!(!retried(ClientError::Url("x".into())));
    }

    #[test]
    fn hints_name_the_fix() {
        assert!(hint("POLICY_MEASUREMENT", "r").contains("cvm-launch measure"));
        assert!(hint("UNKNOWN_RESOURCE", "disk").contains("disk"));
        assert!(!hint("SOMETHING_NEW", "r").is_empty());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_secret_file_is_0600_and_never_replaced_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let write = |force| Unlocker::SecretFile {
            path: p.clone(),
            force,
        };
        write(false).preflight().unwrap();
        write(false).apply("r", b"abc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // It exists now: refused before attesting, and at the write (another process made it meanwhile).
        let e = write(false).preflight().unwrap_err();
        assert!(matches!(e, AgentError::OutputExists { .. }), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(e.exit_code(), 2);
        assert!(matches!(
            write(false).apply("r", b"new").unwrap_err(),
            AgentError::OutputExists { .. }
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        write(true).preflight().unwrap();
        write(true).apply("r", b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["s"]);
    }

    #[test]
    fn a_planted_temporary_name_neither_blocks_nor_receives_the_secret() {
        // The old writer used `.NAME.cvm-agent-PID`: anyone who could guess it could make the write fail
        // (or, with a link, point it elsewhere). The shared writer's names are random.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let planted = dir
            .path()
            .join(format!(".s.cvm-agent-{}", std::process::id()));
        std::fs::write(&planted, b"planted").unwrap();
        Unlocker::SecretFile {
            path: p.clone(),
            force: false,
        }
        .apply("r", b"abc")
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        assert_eq!(std::fs::read(&planted).unwrap(), b"planted");
    }

    #[test]
    fn a_failed_secret_write_leaves_nothing_behind() {
        // The destination is a non-empty directory: the rename fails after the temporary file was
        // written; the temporary file (mode 0600, holding the secret) must go.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("x"), b"").unwrap();
        let e = Unlocker::SecretFile {
            path: d.clone(),
            force: true,
        }
        .apply("r", b"abc")
        .unwrap_err();
        assert!(e.to_string().contains("write"), "{e}");
        assert_eq!(names(dir.path()), ["d"]);
    }

    #[test]
    fn keys_parse() {
        assert!(secret_to_key("r", &[1; 32]).is_ok());
        let k = Key256::from_bytes([2; 32]);
        let parsed = secret_to_key("r", k.to_file_contents().as_bytes()).unwrap();
        assert_eq!(parsed.as_bytes(), k.as_bytes());
        assert!(secret_to_key("r", b"short").is_err());
    }
}
