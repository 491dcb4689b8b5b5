//! The web endpoint's thread: a single-threaded tokio runtime serving HTTP/1.1 with hyper
//! (plain or over rustls), one request per connection.
//!
//! Limits: at most [`CONNECTIONS_MAX`] connections at once (more are accepted and closed
//! at once, counted), a request head of at most [`HEAD_BYTES_MAX`] (431 beyond),
//! everything about one connection (TLS handshake, request, answer) within
//! [`CONNECTION_TIMEOUT`] (then it is dropped, counted), no request bodies read. The
//! thread only reads the counters, so nothing it does can slow the pipeline. Routing is
//! [`super::routes`], the snapshot [`super::status`], the exposition
//! [`crate::metrics`], the credentials [`super::security`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, oneshot};

use super::routes::{self, Route};
use super::security::WebSecurity;
use super::status::{ExportStatus, History, Live, PlanStatus, Reading, SAMPLE_PERIOD, plan_chutes};
use crate::decision::ChuteNumber;
use crate::metrics::{Exposition, Format};
use crate::plan::PlanHandle;
use crate::plc::ChuteStateTable;
use crate::stats::Counters;

/// Longest request head read; a scrape's is a few hundred bytes. (hyper's smallest
/// buffer limit.)
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Everything about one connection must be done within this time, or it is dropped.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more are closed at accept.
pub const CONNECTIONS_MAX: usize = 16;
/// Pause after a failed accept (out of descriptors and the like) before the next.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What the endpoint serves from.
#[derive(Debug, Clone)]
pub struct WebSources {
    /// Live counters.
    pub counters: Arc<Counters>,
    /// The plan deciding now.
    pub plan: Arc<PlanHandle>,
    /// The chutes' states.
    pub chute_states: Arc<ChuteStateTable>,
    /// Ingress workers (for the per-thread series of the exposition).
    pub ingress_workers: usize,
    /// The NATS exporter's counters, when it runs.
    pub export: Option<Arc<crate::export::ExportCounters>>,
    /// The sort-event journal's counters, when `[events]` is on.
    pub journal: Option<Arc<crate::events::journal::JournalStats>>,
    /// The hub connection's counters, when `[hub]` is on.
    pub hub: Option<Arc<crate::export::HubCounters>>,
    /// The hub pre-advice subscriber's counters, when it runs.
    pub hub_preadvice: Option<Arc<crate::export::preadvice_sub::PreadviceCounters>>,
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Address and port.
    pub address: SocketAddr,
    /// TLS and basic auth.
    pub security: Arc<WebSecurity>,
}

/// The security settings in force; replaced whole when the web-config file is read again.
type SharedSecurity = Arc<ArcSwap<WebSecurity>>;

/// A running endpoint. Dropping it stops the thread.
#[derive(Debug)]
pub struct WebServer {
    address: SocketAddr,
    security: SharedSecurity,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Everything a request handler reads.
struct Context {
    sources: WebSources,
    exposition: Exposition,
    security: SharedSecurity,
    history: Mutex<History>,
    /// The plan's chutes, for the plan (name, version) they were listed for.
    plan_chutes: Mutex<(String, u32, Vec<ChuteNumber>)>,
}

impl WebServer {
    /// Binds `settings.address` and serves from a new thread.
    pub fn start(settings: WebSettings, sources: WebSources) -> io::Result<WebServer> {
        let listener = std::net::TcpListener::bind(settings.address)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let security: SharedSecurity = Arc::new(ArcSwap::new(settings.security));
        let context = Arc::new(Context {
            exposition: Exposition::with_parts(
                sources.counters.clone(),
                sources.plan.clone(),
                sources.ingress_workers,
                Some(sources.chute_states.clone()),
                sources.export.clone(),
                sources.journal.clone(),
                sources.hub.clone(),
                sources.hub_preadvice.clone(),
            ),
            sources,
            security: security.clone(),
            history: Mutex::new(History::default()),
            plan_chutes: Mutex::new((String::new(), 0, Vec::new())),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sortd-web".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, context, stopped).await,
                        Err(error) => tracing::error!(%error, "web endpoint stopped"),
                    }
                });
            })?;
        Ok(WebServer {
            address,
            security,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the endpoint is bound to.
    pub fn local_address(&self) -> SocketAddr {
        self.address
    }

    /// Puts new TLS and basic-auth settings in force for the next connections (a
    /// web-config file read again); connections being served keep the old ones.
    pub fn replace_security(&self, security: WebSecurity) {
        self.security.store(Arc::new(security));
    }

    /// Stops the thread; connections being served are dropped.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn serve(
    listener: tokio::net::TcpListener,
    context: Arc<Context>,
    mut stopped: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut sampling = tokio::time::interval(SAMPLE_PERIOD);
    sampling.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = sampling.tick() => {
                let sources = &context.sources;
                let reading = Reading::take(
                    &sources.counters,
                    &sources.chute_states,
                    sources.journal.as_deref(),
                    Instant::now(),
                );
                if let Ok(mut history) = context.history.lock() {
                    history.record(reading);
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "web accept failed");
                        tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    bump(&context.sources.counters.web.refused_limit);
                    drop(stream);
                    continue;
                };
                let context = context.clone();
                tokio::spawn(async move {
                    let web = &context.sources.counters.web;
                    match tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, &context)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "web request not answered"),
                        Err(_) => bump(&web.timed_out),
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// Serves one connection: TLS first if configured, then one HTTP/1.1 request.
async fn connection(stream: tokio::net::TcpStream, context: &Arc<Context>) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let security = context.security.load_full();
    match &security.tls {
        None => http(stream, context, security.clone()).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
            match acceptor.accept(stream).await {
                Ok(stream) => http(stream, context, security.clone()).await,
                Err(error) => {
                    bump(&context.sources.counters.web.tls_failed);
                    Err(error)
                }
            }
        }
    }
}

async fn http<S>(io: S, context: &Arc<Context>, security: Arc<WebSecurity>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let context = context.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = answer(&request, &context, &security);
        async move { Ok::<_, Infallible>(response) }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(HEAD_BYTES_MAX)
        .serve_connection(TokioIo::new(io), service)
        .await
        .map_err(io::Error::other)
}

fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn answer(
    request: &Request<Incoming>,
    context: &Context,
    security: &WebSecurity,
) -> Response<Full<Bytes>> {
    let counters = &context.sources.counters;
    bump(&counters.web.requests);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !security.auth.allows(authorization) {
        bump(&counters.web.unauthorized);
        let mut refused = response(401, "text/plain; charset=utf-8", "unauthorized\n");
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sortd\", charset=\"UTF-8\""),
        );
        return refused;
    }
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str());
    let route = routes::route(request.method().as_str(), target);
    match route {
        Route::Metrics => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok());
            let format = Format::negotiate(accept);
            let mut body = String::new();
            let mut scratch = String::new();
            match context
                .exposition
                .render_as(format, &mut body, &mut scratch)
            {
                Ok(()) => response(200, format.content_type(), body),
                Err(_) => response(
                    500,
                    "text/plain; charset=utf-8",
                    "metrics encoding failed\n",
                ),
            }
        }
        Route::Status => match serde_json::to_vec(&status(context)) {
            Ok(json) => response(200, "application/json", json),
            Err(_) => response(500, "text/plain; charset=utf-8", "status encoding failed\n"),
        },
        fixed => {
            let (body, content_type) = fixed.fixed().unwrap_or(("", "text/plain"));
            let mut answer = response(fixed.status(), content_type, body);
            let headers = answer.headers_mut();
            if fixed == Route::MethodNotAllowed {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            if fixed == Route::Page {
                headers.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
                );
            }
            answer
        }
    }
}

/// The `/status.json` snapshot now.
fn status(context: &Context) -> super::status::Status {
    let sources = &context.sources;
    let counters = &sources.counters;
    let reading = Reading::take(
        counters,
        &sources.chute_states,
        sources.journal.as_deref(),
        Instant::now(),
    );
    let plan = sources.plan.load();
    let mut cached = context
        .plan_chutes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if cached.0 != plan.name() || cached.1 != plan.version() {
        *cached = (plan.name().to_string(), plan.version(), plan_chutes(&plan));
    }
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let live = Live {
        plan: PlanStatus {
            name: plan.name().to_string(),
            version: plan.version(),
            since_unix_ms: load(&counters.plan_since_unix_ms),
        },
        plan_chutes: &cached.2,
        link_up: counters.plc.link_up.load(Ordering::Relaxed),
        in_flight: load(&counters.plc.in_flight),
        link_downs: load(&counters.plc.link_downs),
        scanners_untracked: counters.scanners.untracked(),
        now_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64),
        export: sources.export.as_deref().map(ExportStatus::read),
    };
    let history = context
        .history
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    history.status(&reading, &live)
}
