//! The protocol client: HTTPS (TLS 1.3, the service's CA pinned, optional admin client certificate) with a
//! kept-alive connection, the CBOR endpoints, and the whole flow (challenge → evidence bound to the nonce and
//! a fresh HPKE key → attest → open the secret). Tests, the load generator and the guest agent share it.

use crate::protocol::{self as p, ErrorBody, TeeKind};
use crate::server::tls;
use cvm_keys::hpke::HpkeKeyPair;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

/// Largest response body the client reads.
const MAX_RESPONSE: usize = 16 << 20;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL is not `https://HOST:PORT`.
    #[error("bad server URL {0:?}: expected https://HOST:PORT")]
    Url(String),
    /// TLS files or configuration.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Connecting or talking to the server failed.
    #[error("connection: {0}")]
    Io(String),
    /// The server refused with an error body.
    #[error("refused ({status}): {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The code (a DESIGN.md reason code or a transport code).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// A body could not be encoded or decoded.
    #[error("CBOR: {0}")]
    Cbor(#[from] cvm_keys::cbor::CborError),
    /// Evidence could not be produced.
    #[error("evidence: {0}")]
    Evidence(String),
    /// The secret could not be opened (wrong key or tampered).
    #[error("cannot open the released secret: {0}")]
    Open(String),
}

impl ClientError {
    /// The refusal code, when the server refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Build a TLS 1.3 client configuration trusting only `ca` (PEM), with an optional client certificate.
pub fn tls_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let roots = tls::root_store(ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls::TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(tls::read_certs(cert)?, tls::read_key(key)?)
            .map_err(|e| tls::TlsError::Rustls(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One client: a server, a TLS configuration, and a kept-alive HTTP/1.1 connection (re-opened when the
/// server closes it; TLS sessions are resumed through the configuration's session cache).
pub struct Client {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A released secret and its attestation token.
#[derive(Debug)]
pub struct Released {
    /// The secret value.
    pub value: Zeroizing<Vec<u8>>,
    /// The COSE_Sign1 attestation result.
    pub token: Vec<u8>,
}

/// Evidence as the attest request carries it.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// Which TEE produced it.
    pub tee: TeeKind,
    /// The SNP report or TDX quote.
    pub evidence: Vec<u8>,
    /// Certificates to send along (SNP: the VCEK, or none when the service holds it).
    pub certs: Vec<Vec<u8>>,
}

/// Produces evidence whose REPORT_DATA is the given 64 bytes: the guest's TEE, or the simulator in tests.
pub trait EvidenceSource {
    /// Evidence for `report_data`.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, String>;
}

impl Client {
    /// A client for `url` (`https://HOST:PORT`) with a TLS configuration from [`tls_config`].
    pub fn new(url: &str, config: Arc<rustls::ClientConfig>) -> Result<Self, ClientError> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::Url(url.into()))?
            .trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| ClientError::Url(url.into()))?;
        let port: u16 = port.parse().map_err(|_| ClientError::Url(url.into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| ClientError::Url(url.into()))?;
        Ok(Client {
            host,
            port,
            server_name,
            connector: TlsConnector::from(config),
            conn: None,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let io = |e: std::io::Error| ClientError::Io(e.to_string());
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(io)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Send one request and return the status and body (any status).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let body = body.map(|b| (p::CONTENT_TYPE_CBOR, b));
        let (status, _, bytes) = self.exchange(method, path, body, &[]).await?;
        Ok((status, bytes))
    }

    /// Send one request with an optional body of a content type and extra headers; return the status, the
    /// response headers and the body (any status).
    pub async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(header::HeaderName, String)],
    ) -> Result<(StatusCode, header::HeaderMap, Bytes), ClientError> {
        let mut sender = match self.conn.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.host.as_str());
        for (name, value) in headers {
            req = req.header(name, value.as_str());
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Vec::new(),
        };
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?
            .to_bytes();
        self.conn = Some(sender);
        Ok((status, parts.headers, body))
    }

    /// Send a CBOR request and decode a CBOR answer; error bodies become [`ClientError::Refused`].
    pub async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let bytes = body.map(p::encode).transpose()?;
        let (status, body) = self.send(method, path, bytes).await?;
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        Ok(cvm_keys::cbor::from_slice(&body)?)
    }

    /// `POST /v1/challenge`.
    pub async fn challenge(&mut self, resource: &str) -> Result<p::ChallengeResponse, ClientError> {
        let req = p::ChallengeRequest {
            resource: resource.into(),
        };
        self.call(Method::POST, p::PATH_CHALLENGE, Some(&req)).await
    }

    /// `POST /v1/attest`.
    pub async fn attest(
        &mut self,
        req: &p::AttestRequest,
    ) -> Result<p::AttestResponse, ClientError> {
        self.call(Method::POST, p::PATH_ATTEST, Some(req)).await
    }

    /// `GET /v1/token-key`: the token verification key as a SEC1 point.
    pub async fn token_key(&mut self) -> Result<Vec<u8>, ClientError> {
        let (status, body) = self.send(Method::GET, p::PATH_TOKEN_KEY, None).await?;
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        crate::token::CoseKey::from_cbor(&body)
            .map(|k| k.to_uncompressed())
            .map_err(|e| ClientError::Evidence(e.to_string()))
    }

    /// The whole flow: challenge, evidence bound to the nonce and a fresh HPKE key, attest, open the secret.
    pub async fn fetch_secret(
        &mut self,
        resource: &str,
        source: &dyn EvidenceSource,
    ) -> Result<Released, ClientError> {
        let challenge = self.challenge(resource).await?;
        let keys = HpkeKeyPair::generate().map_err(|e| ClientError::Evidence(e.to_string()))?;
        let report_data = cvm_keys::binding::report_data(
            &challenge.nonce,
            keys.public_key(),
            resource.as_bytes(),
        );
        let Evidence {
            tee,
            evidence,
            certs,
        } = source
            .evidence(&report_data)
            .map_err(ClientError::Evidence)?;
        let resp = self
            .attest(&p::AttestRequest {
                resource: resource.into(),
                nonce: challenge.nonce,
                tee,
                evidence,
                certs,
                hpke_public_key: keys.public_key().to_vec(),
            })
            .await?;
        let value = open_secret(&keys, resource, &resp.secret)?;
        Ok(Released {
            value,
            token: resp.token,
        })
    }

    /// `PUT /v1/admin/secrets/{name}` (needs the admin client certificate).
    pub async fn put_secret(
        &mut self,
        name: &str,
        value: &[u8],
        policy: &str,
    ) -> Result<p::SecretInfo, ClientError> {
        let req = p::PutSecretRequest {
            value: value.to_vec(),
            policy: policy.into(),
        };
        self.call(
            Method::PUT,
            &format!("{}/{name}", p::PATH_ADMIN_SECRETS),
            Some(&req),
        )
        .await
    }

    /// `GET /v1/admin/secrets/{name}`.
    pub async fn get_secret_info(&mut self, name: &str) -> Result<p::SecretInfo, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("{}/{name}", p::PATH_ADMIN_SECRETS),
            None,
        )
        .await
    }

    /// `GET /v1/admin/secrets`.
    pub async fn list_secrets(&mut self) -> Result<Vec<String>, ClientError> {
        let l: p::SecretList = self
            .call::<(), _>(Method::GET, p::PATH_ADMIN_SECRETS, None)
            .await?;
        Ok(l.names)
    }

    /// `DELETE /v1/admin/secrets/{name}`.
    pub async fn delete_secret(&mut self, name: &str) -> Result<(), ClientError> {
        let (status, body) = self
            .send(
                Method::DELETE,
                &format!("{}/{name}", p::PATH_ADMIN_SECRETS),
                None,
            )
            .await?;
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        Ok(())
    }

    /// `GET /v1/admin/audit`.
    pub async fn audit(&mut self) -> Result<Vec<String>, ClientError> {
        let a: p::AuditResponse = self
            .call::<(), _>(Method::GET, p::PATH_ADMIN_AUDIT, None)
            .await?;
        Ok(a.records)
    }

    /// `GET /v1/admin/audit/verify`: the service checks the audit log's hash chain.
    pub async fn audit_verify(&mut self) -> Result<p::AuditVerifyResponse, ClientError> {
        self.call::<(), _>(Method::GET, p::PATH_ADMIN_AUDIT_VERIFY, None)
            .await
    }

    /// `GET /healthz`: the status code (200 ready, 503 the store cannot be reached).
    pub async fn healthz(&mut self) -> Result<u16, ClientError> {
        let (status, _) = self.send(Method::GET, p::PATH_HEALTHZ, None).await?;
        Ok(status.as_u16())
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&mut self) -> Result<String, ClientError> {
        let (status, body) = self.send(Method::GET, p::PATH_METRICS, None).await?;
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// Open a released secret with the HPKE key pair whose public key was bound into the evidence.
pub fn open_secret(
    keys: &HpkeKeyPair,
    resource: &str,
    secret: &p::SealedSecret,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    cvm_keys::hpke::open_base(
        keys,
        &secret.enc,
        &cvm_keys::binding::secret_info(resource.as_bytes()),
        b"",
        &secret.ciphertext,
    )
    .map_err(|e| ClientError::Open(e.to_string()))
}

fn refusal(status: StatusCode, body: &[u8]) -> ClientError {
    match cvm_keys::cbor::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Refused {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
        },
        Err(_) => ClientError::Refused {
            status: status.as_u16(),
            code: String::new(),
            message: String::from_utf8_lossy(body).into_owned(),
        },
    }
}
