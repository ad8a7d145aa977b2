//! The broker's HTTP listener (`--http-listen`, default 127.0.0.1:9644):
//! Prometheus metrics at `/metrics`, and health at `/health/live` (the
//! process serves) and `/health/ready` (recovery done, a controller known,
//! every replica this broker should hold open).
//!
//! A deliberately small HTTP/1.1 server, bound before recovery so that
//! liveness answers while the logs are recovered: one `GET` per
//! connection, answered and closed. What a client can make it hold is
//! bounded: [`HTTP_CONNECTIONS_MAX`] connections (more are closed at
//! once), a request head of [`REQUEST_HEAD_BYTES_MAX`] (`431` past it),
//! [`REQUEST_READ_TIMEOUT_MS`] to send it and [`RESPONSE_WRITE_TIMEOUT_MS`]
//! to take the answer. A body is never read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::raft::Published;

/// Most HTTP connections open at once.
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// Largest request head (request line and headers), bytes.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8192;
/// Time a client has to send its request head, ms: short, so that idle
/// connections cannot keep probes out for long.
pub const REQUEST_READ_TIMEOUT_MS: u64 = 2_000;
/// How long one rendering of `/metrics` answers every scrape, ms: scrapes
/// at once share it instead of each rendering (and holding) its own.
pub const METRICS_CACHE_MS: u64 = 1_000;
/// Time a client has to take the response, ms.
pub const RESPONSE_WRITE_TIMEOUT_MS: u64 = 5_000;

/// What the HTTP listener answers from.
pub struct HttpState {
    metrics: PrometheusHandle,
    /// This broker's id: which replicas it should hold.
    node_id: rill_replication::BrokerId,
    /// Set once recovery is done and the client port serves.
    published: OnceLock<Arc<Published>>,
    /// The lag of the groups coordinated here, set with `published`.
    group_lag: OnceLock<Arc<crate::coordinator::lag::GroupLag>>,
    /// Set once the broker is stopping.
    stopping: AtomicBool,
    /// The last rendering of `/metrics` and when it was made. Guards only
    /// the swap of a pointer; rendering runs outside it.
    rendered: Mutex<Option<(Instant, Arc<String>)>>,
    /// The led partitions' commit indexes across scrapes. Held by one
    /// rendering at a time (a blocking thread), for the in-memory walk of
    /// one status report.
    lag: Mutex<crate::metrics::LagTracker>,
}

impl HttpState {
    /// The state of broker `node_id`, rendering `metrics`; not ready until
    /// [`HttpState::recovered`].
    pub fn new(metrics: PrometheusHandle, node_id: rill_replication::BrokerId) -> HttpState {
        HttpState {
            metrics,
            node_id,
            published: OnceLock::new(),
            group_lag: OnceLock::new(),
            stopping: AtomicBool::new(false),
            rendered: Mutex::new(None),
            lag: Mutex::new(crate::metrics::LagTracker::default()),
        }
    }

    /// The handle the metrics are rendered with.
    pub fn metrics_handle(&self) -> PrometheusHandle {
        self.metrics.clone()
    }

    /// Recovery is done and the client port serves: readiness is judged
    /// from what the Raft thread publishes from now on.
    pub fn serving(
        &self,
        published: Arc<Published>,
        group_lag: Arc<crate::coordinator::lag::GroupLag>,
    ) {
        let _ = self.group_lag.set(group_lag);
        let _ = self.published.set(published);
    }

    /// The broker is stopping: not ready from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// `/metrics`'s body: the last rendering if younger than
    /// [`METRICS_CACHE_MS`], else a new one, made on a blocking thread
    /// (it reads `/proc` and walks every series).
    async fn metrics_text(self: &Arc<Self>) -> Arc<String> {
        if let Some((at, text)) = &*self.rendered.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < Duration::from_millis(METRICS_CACHE_MS)
        {
            return Arc::clone(text);
        }
        let status = match self.published.get() {
            Some(p) => Some(p.fresh_status().await),
            None => None,
        };
        let state = Arc::clone(self);
        let text = tokio::task::spawn_blocking(move || {
            let mut lag = state.lag.lock().unwrap_or_else(|p| p.into_inner());
            let mut text = crate::metrics::render(
                &state.metrics,
                state.published.get().map(|p| &**p),
                status.as_deref(),
                &mut lag,
            );
            if let Some(groups) = state.group_lag.get() {
                text.push_str(&groups.render());
            }
            text
        })
        .await
        .unwrap_or_else(|e| format!("# rendering failed: {e}\n"));
        let text = Arc::new(text);
        *self.rendered.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), Arc::clone(&text)));
        text
    }

    /// `Ok` when the broker is ready to serve, else why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("stopping".into());
        }
        let Some(published) = self.published.get() else {
            return Err("recovering the logs".into());
        };
        if published.controller.borrow().is_none() {
            return Err("no controller known".into());
        }
        let image = published.image.borrow().clone();
        // Copied out, one lock at a time: nothing here holds the Raft
        // thread up.
        let open: std::collections::BTreeSet<_> = published
            .partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        let stopped = published
            .stopped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut missing = Vec::new();
        for t in image.topics.values() {
            for p in 0..t.partitions() {
                let here = t.replicas[p as usize].contains(&self.node_id);
                let group = t.group(p);
                if here && (!open.contains(&group) || stopped.contains(&group)) {
                    missing.push(format!("{}/{p}", t.name));
                }
            }
        }
        if !missing.is_empty() {
            missing.sort();
            let shown = missing
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!(
                "{} replica(s) not open: {shown}{}",
                missing.len(),
                if missing.len() > 10 { ", ..." } else { "" }
            ));
        }
        Ok(())
    }
}

/// Serves HTTP on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Past the limit the connection is dropped (closed) unread.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &state).await {
                tracing::debug!(%peer, error = %e, "http connection ended");
            }
            drop(slot);
        });
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestLine<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
}

/// Parses the request line of `head` (the bytes up to the blank line):
/// `None` when it is not `METHOD SP TARGET SP HTTP/1.x`. The query string
/// is dropped from the path.
pub(crate) fn parse_request_line(head: &[u8]) -> Option<RequestLine<'_>> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some(RequestLine { method, path })
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, state: &Arc<HttpState>) -> std::io::Result<()> {
    let read = tokio::time::timeout(
        Duration::from_millis(REQUEST_READ_TIMEOUT_MS),
        read_head(&mut stream),
    )
    .await;
    let (status, content_type, body) = match read {
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => (
            "431 Request Header Fields Too Large",
            "text/plain",
            Arc::new(format!(
                "request head over {REQUEST_HEAD_BYTES_MAX} bytes\n"
            )),
        ),
        Ok(Ok(Some(head))) => match route(&head, state) {
            Answer::Now(status, content_type, body) => (status, content_type, Arc::new(body)),
            // Shared with every scrape within the cache's time: written
            // from the one copy.
            Answer::Metrics => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                state.metrics_text().await,
            ),
        },
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tokio::time::timeout(Duration::from_millis(RESPONSE_WRITE_TIMEOUT_MS), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response not taken"))?
}

/// The request head (up to and without the blank line), or `None` when
/// it runs past [`REQUEST_HEAD_BYTES_MAX`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(None);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the end of the request head",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// What a request gets: an answer made at once (status line, content
/// type, body), or the metrics.
enum Answer {
    Now(&'static str, &'static str, String),
    Metrics,
}

/// The answer to `head`.
fn route(head: &[u8], state: &HttpState) -> Answer {
    const TEXT: &str = "text/plain; charset=utf-8";
    let Some(request) = parse_request_line(head) else {
        return Answer::Now(
            "400 Bad Request",
            TEXT,
            "not an HTTP/1 request line\n".into(),
        );
    };
    if request.method != "GET" {
        return Answer::Now("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    match request.path {
        "/metrics" => Answer::Metrics,
        "/health/live" => Answer::Now("200 OK", TEXT, "live\n".into()),
        "/health/ready" => match state.ready() {
            Ok(()) => Answer::Now("200 OK", TEXT, "ready\n".into()),
            Err(why) => Answer::Now(
                "503 Service Unavailable",
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        _ => Answer::Now(
            "404 Not Found",
            TEXT,
            "try /metrics, /health/live or /health/ready\n".into(),
        ),
    }
}

/// Binds the HTTP listener at `addr`, for [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_into_method_and_path_without_the_query() {
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Some(RequestLine {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(
            parse_request_line(b"GET /health/ready?verbose=1 HTTP/1.0").map(|r| r.path),
            Some("/health/ready")
        );
        for bad in [
            &b""[..],
            b"GET",
            b"GET /metrics",
            b"GET /metrics HTTP/2",
            b"GET metrics HTTP/1.1",
            b"GET /a b HTTP/1.1",
            b"\xff\xfe /x HTTP/1.1",
        ] {
            assert_eq!(parse_request_line(bad), None, "{bad:?}");
        }
    }
}
