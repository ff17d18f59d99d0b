//! The metrics endpoint: hyper's HTTP/1 server on the system's tokio
//! runtime (the one async tasks run on). Each answer is rendered on the
//! runtime's blocking pool, since a monitor snapshot walks `/proc`.

use super::{render_json, render_prometheus, PROMETHEUS_CONTENT_TYPE};
use crate::observe::Observed;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How long a client may take to send its request head.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long dropping the server waits for its listener to close.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// A running metrics endpoint, from
/// [`ConcurrentSystem::serve_metrics`](crate::ConcurrentSystem::serve_metrics).
/// Serves `GET /metrics` (OpenMetrics text) and `GET /stats.json` (JSON).
///
/// Dropping it stops accepting connections and waits (2 s at most) until
/// the listener is closed; the server also answers 503 once the system is
/// gone, and stops with the system's runtime.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    /// Disconnected when the accept loop has ended.
    done: mpsc::Receiver<()>,
}

impl MetricsServer {
    /// The address the server listens on (with the port the OS chose,
    /// when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until its listener is closed.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(stop) = self.stop.take() else { return };
        let _ = stop.send(true);
        // `Disconnected` once the accept loop dropped its sender.
        let _ = self.done.recv_timeout(STOP_WAIT);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Serves the metrics of the system seen through `view` on `addr`, on the
/// runtime of `handle`.
pub(crate) fn serve(
    handle: &tokio::runtime::Handle,
    view: Weak<dyn Observed>,
    addr: impl ToSocketAddrs,
) -> io::Result<MetricsServer> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let listener = {
        let _in_runtime = handle.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let (stop, stopped) = watch::channel(false);
    let (done_tx, done) = mpsc::channel();
    handle.spawn(async move {
        let _done = done_tx;
        accept_loop(listener, view, stopped).await;
    });
    Ok(MetricsServer {
        addr: local,
        stop: Some(stop),
        done,
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Weak<dyn Observed>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = stopped.changed() => return,
            conn = listener.accept() => match conn {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::debug!("seedcore: metrics accept failed: {e}");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, shared.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CLIENT_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                log::debug!("seedcore: metrics request failed: {e}");
            }
        });
    }
}

fn reply(status: StatusCode, kind: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn answer(
    req: Request<Incoming>,
    shared: Weak<dyn Observed>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET is served\n".into(),
        ));
    }
    let render: fn(&dyn Observed) -> String = match req.uri().path() {
        "/metrics" => render_prometheus,
        "/stats.json" => render_json,
        "/" => {
            return Ok(reply(
                StatusCode::OK,
                TEXT,
                "seedcore metrics: /metrics (OpenMetrics text), /stats.json (JSON)\n".into(),
            ))
        }
        _ => {
            return Ok(reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: try /metrics or /stats.json\n".into(),
            ))
        }
    };
    let kind = if req.uri().path() == "/metrics" {
        PROMETHEUS_CONTENT_TYPE
    } else {
        "application/json"
    };
    let gone = || {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "the system is gone\n".into(),
        )
    };
    // The snapshot walks /proc: off the runtime's workers.
    let body = tokio::task::spawn_blocking(move || shared.upgrade().map(|s| render(&*s))).await;
    Ok(match body {
        Ok(Some(body)) => reply(StatusCode::OK, kind, body),
        _ => gone(),
    })
}
