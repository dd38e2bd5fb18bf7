//! The built-in test server behind `conntrace serve`: hyper 1 with hyper-util's
//! auto connection (HTTP/1.1 and h2c on one port, or h2 and http/1.1 by ALPN over
//! TLS with a self-signed certificate made at start). Each keep-alive behaviour
//! that makes clients open new connections is a knob of [`ServerConfig`]:
//! an idle timeout (nginx `keepalive_timeout`), a request limit per connection
//! (nginx `keepalive_requests`), closing after every response, a body size and a
//! simulated latency. Bodies are sent from one shared chunk, so a body of any
//! size costs no more memory than that chunk; a finished connection leaves
//! the server's memory as it ends; and when the process runs out of file
//! descriptors the server waits for connections to close instead of spinning
//! on the failing accept.
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
use hyper::body::{Frame, Incoming, SizeHint};
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
    pub body_size: u64,
    /// Simulated latency before answering.
    pub delay: Option<Duration>,
    /// Serve HTTPS with a self-signed certificate, offering h2 and http/1.1 by ALPN.
    pub tls: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
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
        self.served.counts.lock().map_or(0, |c| c.answered)
    }

    /// Connection tasks the server holds: the open connections, and finished
    /// ones not yet let go.
    pub fn connections_held(&self) -> usize {
        self.served.counts.lock().map_or(0, |c| c.held)
    }

    /// Blocks until `n` requests have been answered or `timeout` passes;
    /// returns whether they were.
    pub fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        self.served.wait_until(timeout, |c| c.answered >= n)
    }

    /// Blocks until the server holds at most `n` connection tasks or
    /// `timeout` passes; returns whether it does.
    pub fn wait_for_connections_held(&self, n: usize, timeout: Duration) -> bool {
        self.served.wait_until(timeout, |c| c.held <= n)
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
    /// The chunk every response body is sent from, made once.
    chunk: Bytes,
    served: Arc<Served>,
    /// Becomes true when the server shuts down.
    closing: watch::Receiver<bool>,
}

/// The server's progress, for callers that wait for it.
#[derive(Default)]
struct Served {
    counts: Mutex<Counts>,
    changed: Condvar,
}

#[derive(Default)]
struct Counts {
    /// Requests answered.
    answered: u64,
    /// Connection tasks held.
    held: usize,
}

impl Served {
    fn update(&self, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
            self.changed.notify_all();
        }
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&Counts) -> bool) -> bool {
        let Ok(counts) = self.counts.lock() else {
            return false;
        };
        self.changed
            .wait_timeout_while(counts, timeout, |c| !done(c))
            .map(|(c, _)| done(&c))
            .unwrap_or(false)
    }
}

/// The body chunk: bodies larger than it are sent as slices of it, one after
/// the other.
const CHUNK: usize = 64 << 10;

/// A response body of `left` bytes sent as slices of one shared chunk, with
/// its exact length (hyper sends it as Content-Length).
struct FilledBody {
    chunk: Bytes,
    left: u64,
}

impl hyper::body::Body for FilledBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Whether an accept error concerns only the connection it would have
/// returned; others (no file descriptors left, no memory) last until
/// something else changes.
fn concerns_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// How long the accept loop waits after an error that lasts (hyper 0.14's
/// `AddrIncoming` slept on them too; tokio's listener would otherwise report
/// the same error at once, forever).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    config: ServerConfig,
    served: Arc<Served>,
    mut stop: oneshot::Receiver<()>,
) {
    let (closing_tx, closing) = watch::channel(false);
    let chunk_len = config.body_size.min(CHUNK as u64) as usize;
    let shared = Arc::new(Shared {
        chunk: Bytes::from(vec![b'x'; chunk_len]),
        config,
        served: served.clone(),
        closing,
    });
    let mut connections = tokio::task::JoinSet::new();
    let mut reported = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // A connection's task leaves the set as it ends, so the set
            // holds only the open connections.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, acceptor.clone(), shared.clone()));
                }
                Err(e) if concerns_one_connection(&e) => {}
                Err(e) => {
                    if !reported {
                        reported = true;
                        eprintln!(
                            "conntrace: serve: cannot accept connections ({e}); retrying every \
                             {}ms until it can",
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
        let held = connections.len();
        served.update(|c| c.held = held);
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
) -> Result<Response<FilledBody>, Infallible> {
    let config = &shared.config;
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(delay) = config.delay {
        tokio::time::sleep(delay).await;
    }
    let last = config.close || config.max_requests.is_some_and(|max| n >= max);
    let mut resp = Response::new(FilledBody {
        chunk: shared.chunk.clone(),
        left: config.body_size,
    });
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
    shared.served.update(|c| c.answered += 1);
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
