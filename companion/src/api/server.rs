//! The HTTP server: accept loop, optional TLS, and the limits that keep a slow, idle or
//! flooding client from holding the service's resources.

use std::{convert::Infallible, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use axum::{Router, extract::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls::{ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{io::AsyncWriteExt, net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use super::limits::{self, Activity, Throttled};

/// HTTP/2 streams open at once on one connection (each also counts against --max-in-flight).
pub const MAX_STREAMS: u32 = 8;
/// Bytes HTTP/2 buffers for sending per stream, beyond what the budgets count.
const MAX_SEND_BUFFER: usize = 64 * 1024;
/// At most one line per period for warnings a hostile client could repeat per connection.
const LOG_PERIOD: Duration = Duration::from_secs(10);
/// Time given to requests in flight at shutdown. Answers come from memory in milliseconds; what
/// is still open after this is a client that stalled (mid-headers, or not reading).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Largest request head (request line and headers) buffered for one connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub struct ServerOptions {
    pub tls: Option<Arc<ServerConfig>>,
    pub max_connections: usize,
    /// A connection must send a complete request head within this from its acceptance (TLS
    /// handshake included), and is closed when idle for it.
    pub header_timeout: Duration,
    /// A connection whose open answers make no progress for this long is closed.
    pub request_timeout: Duration,
    /// Bytes of built answers one connection may have waiting to be sent.
    pub connection_buffer_bytes: u32,
}

/// Builds the TLS configuration from PEM files; with `client_ca`, clients must present a
/// certificate signed by one of its certificates.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificates from {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading client CAs from {}", path.display()))?
            {
                roots
                    .add(ca.with_context(|| format!("parsing {}", path.display()))?)
                    .with_context(|| format!("adding a client CA from {}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (up to a grace period).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let connections = Arc::new(Semaphore::new(options.max_connections));
    let tls = options.tls.map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(options.header_timeout)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buf_size(MAX_SEND_BUFFER);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let (idle, stall) = (options.header_timeout, options.request_timeout);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, or the peer gave up before we accepted: wait a
                    // moment rather than spin.
                    ACCEPT_FAILED.warn(&err);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse(stream, peer, tls.is_some());
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The clock of `--header-timeout` starts now: a TLS handshake, an HTTP/2 preface and
        // the first request head all count against it.
        let activity = Activity::new(options.connection_buffer_bytes);
        // Each request is open (for the watchdog) until its answer's body is dropped, each frame
        // sent counting as progress, and can reach the connection's byte budget.
        let service = {
            let (router, activity) = (router.clone(), activity.clone());
            TowerToHyperService::new(tower::service_fn(move |mut request: Request<Incoming>| {
                let open = activity.begin();
                request.extensions_mut().insert(activity.clone());
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await?;
                    Ok::<_, Infallible>(limits::hold(response, open))
                }
            }))
        };
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let served = async {
                match tls {
                    Some(acceptor) => {
                        let stream = acceptor.accept(stream).await.map_err(|err| {
                            debug!(%peer, "TLS handshake failed: {err}");
                        })?;
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        Ok::<_, ()>(watcher.watch(connection.into_owned()).await)
                    }
                    None => {
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        Ok::<_, ()>(watcher.watch(connection.into_owned()).await)
                    }
                }
            };
            tokio::select! {
                result = served => {
                    if let Ok(Err(err)) = result {
                        connection_error(peer, &*err);
                    }
                }
                expiry = activity.expired(idle, stall) => {
                    // Dropping the connection closes it and resets its streams, which frees
                    // their answers.
                    debug!(%peer, ?expiry, "closing the connection");
                }
            }
        });
    }

    info!("no longer accepting; finishing requests in flight");
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

static ACCEPT_FAILED: Throttled = Throttled::new("accept failed", LOG_PERIOD);
static REFUSED: Throttled = Throttled::new(
    "refused a connection: --max-connections are open",
    LOG_PERIOD,
);
static ABUSIVE_CLIENTS: Throttled = Throttled::new(
    "closed an HTTP/2 connection that reset or provoked too many streams",
    LOG_PERIOD,
);

/// A connection that ended with an error: a client's ordinary failures (a reset, a bad request)
/// are debug; abuse the HTTP/2 layer stopped (rapid resets) is a throttled warning, since one
/// client reconnecting in a loop would otherwise write a line per connection.
fn connection_error(peer: SocketAddr, err: &(dyn std::error::Error + 'static)) {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
        {
            return ABUSIVE_CLIENTS.warn(&format_args!("{peer}: {err}"));
        }
        source = cause.source();
    }
    debug!(%peer, "connection ended: {err}");
}

/// Over the connection cap: a plain-HTTP client gets a short 503 so it can tell overload from
/// failure; a TLS client's connection is closed.
fn refuse(mut stream: tokio::net::TcpStream, peer: SocketAddr, tls: bool) {
    REFUSED.warn(&peer);
    if tls {
        return;
    }
    tokio::spawn(async move {
        let response = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
connection: close\r\ncontent-length: 21\r\n\r\ntoo many connections\n";
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(response)).await;
    });
}
