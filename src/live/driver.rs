//! The request driver behind `conntrace run`: workers sharing one reqwest client
//! issue numbered requests, each carrying `x-conntrace-id: N`, with the client
//! settings that decide whether connections are reused (draining bodies, pool
//! limits, HTTP version, pacing, retries). For every request it records what
//! only the client knows: when it started and ended, the status or error, and
//! the local and remote socket address of the connection that carried it
//! (hyper-util's `HttpInfo`), which is how requests are attributed over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::client::legacy::connect::HttpInfo;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::wire::Timestamp;

/// The request header that tags every request with its number.
pub const TAG_HEADER: &str = "x-conntrace-id";

/// Which HTTP versions the client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/1.1 on http://; ALPN (h2 or http/1.1) on https://.
    #[default]
    Auto,
    Http1Only,
    /// HTTP/2 with prior knowledge on http:// (h2c); on https:// ALPN offers only h2.
    Http2,
}

impl HttpVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Auto => "auto",
            HttpVersion::Http1Only => "http1",
            HttpVersion::Http2 => "http2",
        }
    }
}

/// Everything the driver needs, validated.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub url: Url,
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub requests: u64,
    pub concurrency: usize,
    /// Read every response body to its end (the default); `false` drops it unread.
    pub drain: bool,
    pub head: bool,
    pub pool_max_idle_per_host: Option<usize>,
    pub pool_idle_timeout: Option<Duration>,
    pub http: HttpVersion,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub insecure: bool,
    pub retries: u32,
    /// Write TLS secrets here in the SSLKEYLOGFILE format.
    pub keylog: Option<PathBuf>,
    /// Connect to this address whatever the URL's host resolves to.
    pub resolve: Option<SocketAddr>,
}

impl DriverConfig {
    /// `n` sequential GET requests to `url` with the client's defaults.
    pub fn new(url: Url, requests: u64) -> DriverConfig {
        DriverConfig {
            url,
            method: Method::GET,
            headers: Vec::new(),
            requests,
            concurrency: 1,
            drain: true,
            head: false,
            pool_max_idle_per_host: None,
            pool_idle_timeout: None,
            http: HttpVersion::Auto,
            interval: None,
            timeout: None,
            insecure: false,
            retries: 0,
            keylog: None,
            resolve: None,
        }
    }

    /// HEAD under `--head`, else the configured method.
    pub fn effective_method(&self) -> Method {
        if self.head {
            Method::HEAD
        } else {
            self.method.clone()
        }
    }
}

/// One request as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRequest {
    /// The value of its `x-conntrace-id` header, from 1.
    pub id: u64,
    pub worker: usize,
    pub method: String,
    pub start: Timestamp,
    /// When the response head arrived (or the request failed).
    pub head: Timestamp,
    /// When the body was read to its end or dropped.
    pub end: Timestamp,
    pub status: Option<u16>,
    pub version: Option<String>,
    pub error: Option<String>,
    /// Body bytes read: the body is read as it arrives, counted and let go,
    /// so a body of any size costs no more memory than one chunk.
    pub body_bytes: u64,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// The error of a request cut short by Ctrl-C (or SIGTERM, SIGHUP).
pub const INTERRUPTED: &str = "interrupted";

impl ClientRequest {
    /// Whether the request failed on its own, not cut short by an interruption.
    pub fn failed(&self) -> bool {
        self.error.as_deref().is_some_and(|e| e != INTERRUPTED)
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot build the HTTP client")]
    Client(#[from] reqwest::Error),
    #[error("cannot configure TLS: {0}")]
    Tls(String),
    #[error("cannot open the TLS key log {path}")]
    Keylog {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Asks the workers to stop issuing requests (Ctrl-C). Requests in flight end
/// with the error "interrupted".
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    stopped: Arc<AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
}

impl StopSignal {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    async fn stopped(&self) {
        let notified = self.notify.notified();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }
}

pub(crate) fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_micros() as i64)
}

/// Installs the ring provider as rustls' process default, once. reqwest is built
/// with `rustls-no-provider`, so a client cannot be made before this.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client(config: &DriverConfig) -> Result<reqwest::Client, DriverError> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    b = match config.retries {
        0 => b.retry(reqwest::retry::never()),
        n => {
            let host = config.url.host_str().unwrap_or_default().to_string();
            b.retry(
                reqwest::retry::for_host(host)
                    .no_budget()
                    .max_retries_per_request(n)
                    .classify_fn(|rr| {
                        if rr.error().is_some() {
                            rr.retryable()
                        } else {
                            rr.success()
                        }
                    }),
            )
        }
    };
    if let (Some(addr), Some(host)) = (config.resolve, config.url.host_str()) {
        b = b.resolve(host, addr);
    }
    if let Some(n) = config.pool_max_idle_per_host {
        b = b.pool_max_idle_per_host(n);
    }
    if let Some(d) = config.pool_idle_timeout {
        b = b.pool_idle_timeout(d);
    }
    if let Some(d) = config.timeout {
        b = b.timeout(d);
    }
    b = match config.http {
        HttpVersion::Auto => b,
        HttpVersion::Http1Only => b.http1_only(),
        HttpVersion::Http2 => b.http2_prior_knowledge(),
    };
    if config.url.scheme() == "https" && config.keylog.is_some() {
        b = b.tls_backend_preconfigured(tls_config(config)?);
    } else if config.insecure {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    Ok(b.build()?)
}

/// A rustls client configuration of our own, for what reqwest's builder cannot
/// say: a key log written to a chosen file, and ALPN offering only h2.
fn tls_config(config: &DriverConfig) -> Result<rustls::ClientConfig, DriverError> {
    let mut tls = client_tls(config.insecure).map_err(DriverError::Tls)?;
    tls.alpn_protocols = match config.http {
        HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        HttpVersion::Http1Only => vec![b"http/1.1".to_vec()],
        HttpVersion::Http2 => vec![b"h2".to_vec()],
    };
    if let Some(path) = &config.keylog {
        tls.key_log = Arc::new(KeyLogFile::create(path)?);
    }
    Ok(tls)
}

/// A rustls client configuration that checks the server's certificate
/// against the platform's roots, or, `insecure`, accepts any (still checking
/// the handshake's signatures). No ALPN yet.
pub(crate) fn client_tls(insecure: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    Ok(if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let verifier =
            rustls_platform_verifier::Verifier::new(provider).map_err(|e| e.to_string())?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    })
}

/// TLS secrets in the NSS key log format (SSLKEYLOGFILE) that Wireshark and
/// tshark read with `-o tls.keylog_file:FILE`.
#[derive(Debug)]
struct KeyLogFile(std::sync::Mutex<std::fs::File>);

impl KeyLogFile {
    fn create(path: &std::path::Path) -> Result<KeyLogFile, DriverError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| DriverError::Keylog {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(KeyLogFile(std::sync::Mutex::new(file)))
    }
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        use std::io::Write;
        let line = format!("{label} {} {}\n", hex(client_random), hex(secret));
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--insecure`: accepts any server certificate, still checking the handshake
/// signatures so the session is well-formed.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Issues `config.requests` requests from `config.concurrency` workers sharing
/// one client and returns them ordered by id. `on_done` is called after each
/// request (a progress bar). The client is dropped before this returns, so its
/// idle connections start closing.
pub async fn drive(
    config: Arc<DriverConfig>,
    stop: StopSignal,
    on_done: Arc<dyn Fn(&ClientRequest) + Send + Sync>,
) -> Result<Vec<ClientRequest>, DriverError> {
    let client = client(&config)?;
    let next = Arc::new(AtomicU64::new(1));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..config.concurrency.max(1) {
        let (client, config, next, stop, on_done) = (
            client.clone(),
            config.clone(),
            next.clone(),
            stop.clone(),
            on_done.clone(),
        );
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                if stop.is_stopped() {
                    break;
                }
                let id = next.fetch_add(1, Ordering::SeqCst);
                if id > config.requests {
                    break;
                }
                if let (Some(pause), false) = (config.interval, done.is_empty()) {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.stopped() => break,
                    }
                }
                let r = tokio::select! {
                    r = one_request(&client, &config, id, worker) => r,
                    _ = stop.stopped() => interrupted(&config, id, worker),
                };
                on_done(&r);
                done.push(r);
            }
            done
        });
    }
    drop(client);
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(done) = done {
            all.extend(done);
        }
    }
    all.sort_by_key(|r| r.id);
    Ok(all)
}

fn interrupted(config: &DriverConfig, id: u64, worker: usize) -> ClientRequest {
    let t = now();
    ClientRequest {
        id,
        worker,
        method: config.effective_method().to_string(),
        start: t,
        head: t,
        end: t,
        status: None,
        version: None,
        error: Some(INTERRUPTED.into()),
        body_bytes: 0,
        local: None,
        remote: None,
    }
}

async fn one_request(
    client: &reqwest::Client,
    config: &DriverConfig,
    id: u64,
    worker: usize,
) -> ClientRequest {
    let method = config.effective_method();
    let mut headers = HeaderMap::new();
    for (k, v) in &config.headers {
        headers.append(k.clone(), v.clone());
    }
    headers.insert(TAG_HEADER, HeaderValue::from(id));
    let start = now();
    let sent = client
        .request(method.clone(), config.url.clone())
        .headers(headers)
        .send()
        .await;
    let head = now();
    let mut r = ClientRequest {
        id,
        worker,
        method: method.to_string(),
        start,
        head,
        end: head,
        status: None,
        version: None,
        error: None,
        body_bytes: 0,
        local: None,
        remote: None,
    };
    match sent {
        Err(e) => r.error = Some(error_chain(&e)),
        Ok(resp) => {
            r.status = Some(resp.status().as_u16());
            r.version = Some(format!("{:?}", resp.version()));
            if let Some(info) = resp.extensions().get::<HttpInfo>() {
                r.local = Some(info.local_addr());
                r.remote = Some(info.remote_addr());
            }
            if config.drain {
                let mut resp = resp;
                loop {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => r.body_bytes += chunk.len() as u64,
                        Ok(None) => break,
                        Err(e) => {
                            r.error = Some(error_chain(&e));
                            break;
                        }
                    }
                }
            } else {
                drop(resp);
            }
            r.end = now();
        }
    }
    r
}

/// The error with its causes, as "outer: inner: innermost".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
