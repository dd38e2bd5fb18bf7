//! The built-in test server behind `conntrace serve`: hyper 1 with hyper-util's
//! auto connection (HTTP/1.1 and h2c on one port, or h2 and http/1.1 by ALPN over
//! TLS with a self-signed certificate made at start). Each keep-alive behaviour
//! that makes clients open new connections is a knob of [`ServerConfig`]:
//! an idle timeout (nginx `keepalive_timeout`), a request limit per connection
//! (nginx `keepalive_requests`), closing after every response, a body size and a
//! simulated latency.
//!
//! [`TestServer`] is the library handle: it binds, hands back its address, serves
//! on its own thread and shuts down when dropped, so tests need no sleeps.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// How the server treats connections and requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerConfig {
    /// Close a connection that has been idle this long (nginx `keepalive_timeout`).
    pub idle_timeout: Option<Duration>,
    /// Answer the Nth request on a connection with `Connection: close` and close
    /// (nginx `keepalive_requests`). Over HTTP/2 the connection gets a GOAWAY.
    pub max_requests: Option<u64>,
    /// Close the connection after every response.
    pub close: bool,
    /// Bytes in every response body.
    pub body_size: usize,
    /// Simulated latency before answering.
    pub delay: Option<Duration>,
    /// Serve HTTPS with a self-signed certificate, offering h2 and http/1.1 by ALPN.
    pub tls: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot make the self-signed certificate: {0}")]
    Certificate(String),
    #[error("cannot start the server's runtime: {0}")]
    Runtime(io::Error),
}

/// A running server. Dropping it stops accepting, closes the connections and
/// joins the server thread.
pub struct TestServer {
    addr: SocketAddr,
    tls: bool,
    served: Arc<Served>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TestServer {
    /// Binds `listen` (port 0 picks a free port) and starts serving on a thread
    /// of its own. The socket is listening when this returns.
    pub fn start(listen: SocketAddr, config: ServerConfig) -> Result<TestServer, ServerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let acceptor = if config.tls {
            Some(tls_acceptor()?)
        } else {
            None
        };
        let listener = runtime
            .block_on(TcpListener::bind(listen))
            .map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
        let (shutdown, stop) = oneshot::channel();
        let tls = config.tls;
        let served = Arc::new(Served::default());
        let thread = {
            let served = served.clone();
            thread::Builder::new()
                .name("conntrace-serve".into())
                .spawn(move || runtime.block_on(serve(listener, acceptor, config, served, stop)))
                .map_err(ServerError::Runtime)?
        };
        Ok(TestServer {
            addr,
            tls,
            served,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.count.lock().map_or(0, |n| *n)
    }

    /// Blocks until `n` requests have been answered or `timeout` passes;
    /// returns whether they were.
    pub fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        let Ok(count) = self.served.count.lock() else {
            return false;
        };
        self.served
            .changed
            .wait_timeout_while(count, timeout, |c| *c < n)
            .map(|(c, _)| *c >= n)
            .unwrap_or(false)
    }

    /// The base URL, `http://ADDR/` or `https://ADDR/`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish()
    }
}

fn tls_acceptor() -> Result<TlsAcceptor, ServerError> {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| ServerError::Certificate(e.to_string()))?;
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .map_err(|e| ServerError::Certificate(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What every connection of one server shares.
struct Shared {
    config: ServerConfig,
    /// The response body, made once.
    body: Bytes,
    served: Arc<Served>,
    /// Becomes true when the server shuts down.
    closing: watch::Receiver<bool>,
}

/// Requests answered so far, for callers that wait for the server's progress.
#[derive(Default)]
struct Served {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Served {
    fn add_one(&self) {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
            self.changed.notify_all();
        }
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    config: ServerConfig,
    served: Arc<Served>,
    mut stop: oneshot::Receiver<()>,
) {
    let (closing_tx, closing) = watch::channel(false);
    let shared = Arc::new(Shared {
        body: Bytes::from(vec![b'x'; config.body_size]),
        config,
        served,
        closing,
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(stream, acceptor.clone(), shared.clone()));
            }
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Connections finish their in-flight responses; a client that holds one
    // open past the grace period is cut off when the set is dropped.
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
}

/// What the service shares with its connection's watchdog.
struct ConnState {
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Asks the connection to shut down gracefully (h2: GOAWAY).
    shutdown: Notify,
}

async fn connection(stream: TcpStream, acceptor: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let activity = Activity::new();
    let io = ActivityIo {
        inner: stream,
        activity: activity.clone(),
    };
    match acceptor {
        None => drive_connection(io, activity, shared).await,
        Some(acceptor) => {
            let accept = acceptor.accept(io);
            let tls = match shared.config.idle_timeout {
                Some(idle) => match tokio::time::timeout(idle, accept).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => accept.await,
            };
            if let Ok(tls) = tls {
                drive_connection(tls, activity, shared).await;
            }
        }
    }
}

async fn drive_connection<T>(io: T, activity: Activity, shared: Arc<Shared>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let state = Arc::new(ConnState {
        requests: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        shutdown: Notify::new(),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    if let Some(idle) = config.idle_timeout {
        // Closes an idle HTTP/1 keep-alive connection without a 408, as nginx does.
        builder.http1().header_read_timeout(idle);
    }
    if config.close {
        builder.http1().keep_alive(false);
    }
    builder.http2().timer(TokioTimer::new());
    let service = {
        let state = state.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |req| answer(req, shared.clone(), state.clone()))
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = shared.closing.clone();
    let mut shutting_down = *closing.borrow();
    if shutting_down {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let idle_check = idle_deadline(config, &activity, &state, shutting_down);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = state.shutdown.notified(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = closing.wait_for(|c| *c), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            idle = idle_check => {
                if idle {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Sleeps until the connection may have been idle for the configured timeout,
/// then says whether it really was. Covers h2c and connections that never send
/// a byte, which hyper's header read timeout does not.
async fn idle_deadline(
    config: &ServerConfig,
    activity: &Activity,
    state: &ConnState,
    shutting_down: bool,
) -> bool {
    let Some(idle) = config.idle_timeout.filter(|_| !shutting_down) else {
        std::future::pending::<()>().await;
        return false;
    };
    let since = activity.since_last();
    if since < idle {
        tokio::time::sleep(idle - since).await;
    }
    activity.since_last() >= idle && state.in_flight.load(Ordering::SeqCst) == 0
}

async fn answer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    state: Arc<ConnState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let config = &shared.config;
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(delay) = config.delay {
        tokio::time::sleep(delay).await;
    }
    let last = config.close || config.max_requests.is_some_and(|max| n >= max);
    let mut resp = Response::new(Full::new(shared.body.clone()));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if last {
        if req.version() == Version::HTTP_2 {
            state.shutdown.notify_one();
        } else {
            // RFC 9112 §9.6: the server closes after the response that says so.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    shared.served.add_one();
    Ok(resp)
}

/// The last time a connection's socket read or wrote a byte.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_micros: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_micros: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_micros() as u64;
        self.last_micros.store(now, Ordering::Relaxed);
    }

    fn since_last(&self) -> Duration {
        let last = Duration::from_micros(self.last_micros.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A socket that records its activity.
struct ActivityIo<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
