//! The client listener: one task per connection reading frames, one task
//! per request, and one writer per connection sending responses in the
//! order they finish (matched by correlation id, so a parked fetch never
//! holds up a produce on the same connection).
//!
//! Limits (see [`ClientLimits`] for the settings):
//! - connections in total and per source address ([`ConnectionGate`]): a
//!   connection past either is closed as soon as it is accepted;
//! - a frame above [`MAX_REQUEST_FRAME_BYTES`] or one that cannot be parsed
//!   closes that connection at once;
//! - once a frame's length prefix is read, its bytes are taken from the
//!   broker-wide budget of queued request bytes before any more of it is
//!   read, and given back when its request has been handled (a produce
//!   once proposed, anything else once answered): past the budget, the
//!   broker stops reading sockets instead of allocating;
//! - a frame must arrive whole within `request_read_timeout_ms` of its
//!   first byte, and a connection with nothing read and nothing in flight
//!   for `connections_max_idle_ms` is closed;
//! - at most [`IN_FLIGHT_MAX`] requests per connection are handled at a
//!   time (reading pauses beyond that); at most [`RESPONSES_QUEUED_MAX`]
//!   responses wait for the socket, and a write that takes longer than
//!   `client_write_timeout_ms` closes the connection, dropping the
//!   responses it pinned.
//!
//! Shutdown (as mini-redis's server does it): once the shutdown signal is
//! raised the listener stops accepting and is closed, and every connection
//! stops reading. A request already routed is answered: a produce once
//! its `acks` arrive (the Raft thread is still running), a parked fetch at
//! once with what it can read (as if its wait had ended), anything else
//! when done. A frame not yet routed (partly read, or read but not yet
//! started) is dropped unanswered, and takes no effect. The connection
//! then closes its write side after its last response; if the client had
//! sent more, it reads (and discards) until the client closes too, at most
//! [`LINGER_MS_MAX`], so closing does not reset the connection under
//! responses the client has not read yet. [`serve`] returns once every
//! connection has closed, or after [`DRAIN_MS_MAX`], when the connections
//! still open are dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rill_client::protocol::frame::LENGTH_PREFIX_BYTES;
use rill_client::protocol::messages::{FetchRequest, Request};
use rill_client::protocol::{
    ErrorCode, MAX_REQUEST_FRAME_BYTES, RequestFrameError, decode_request, encode_error_response,
    encode_response, take_frame,
};
use rill_client::writer::write_frames_within;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::handlers::{Caller, Routed, route};
use crate::limits::{Admitted, ClientLimits, ConnectionGate};
use crate::state::Broker;

/// Requests handled at once per connection.
pub const IN_FLIGHT_MAX: usize = 64;
/// Encoded responses waiting for the socket per connection.
pub const RESPONSES_QUEUED_MAX: usize = 64;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Refused connections are logged once, then once per this many.
const REFUSALS_PER_LOG_LINE: u64 = 1000;
/// Longest a stopping broker waits for its client connections to answer
/// the requests they have routed and close, ms.
pub const DRAIN_MS_MAX: u64 = 5_000;
/// Longest a connection closed by shutdown waits for the client to close
/// its side after the last response, ms.
pub const LINGER_MS_MAX: u64 = 500;

/// Raised (set to `true`) to stop a [`serve`]; see the module
/// documentation.
pub type ShutdownSignal = watch::Receiver<bool>;

/// Waits until `shutdown` is raised (or its sender is gone).
async fn raised(shutdown: &mut ShutdownSignal) {
    let _ = shutdown.wait_for(|raised| *raised).await;
}

/// What every connection of a listener shares.
struct Shared {
    broker: Arc<Broker>,
    limits: ClientLimits,
    /// The queued request bytes' budget, one permit per byte.
    budget: Arc<Semaphore>,
}

/// Accepts connections within the broker's [`ClientLimits`] until
/// `shutdown` is raised; then drains them (see the module documentation)
/// and returns.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, mut shutdown: ShutdownSignal) {
    let limits = broker.limits.clone();
    let gate = ConnectionGate::new(&limits);
    let shared = Arc::new(Shared {
        broker,
        budget: Arc::new(Semaphore::new(limits.queued_max_request_bytes)),
        limits,
    });
    let refused = AtomicU64::new(0);
    // Every open connection's task; finished ones are reaped as the loop
    // goes, so it holds at most the connections the gate admits.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = raised(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let admitted = match gate.admit(peer.ip()) {
                    Ok(a) => a,
                    Err(limit) => {
                        // Dropping the stream closes it: nothing is read.
                        crate::metrics::connection_refused(match limit {
                            crate::limits::Refusal::Total => "max_connections",
                            crate::limits::Refusal::PerIp => "max_connections_per_ip",
                        });
                        let n = refused.fetch_add(1, Ordering::Relaxed);
                        if n % REFUSALS_PER_LOG_LINE == 0 {
                            tracing::warn!(%peer, ?limit, refused_so_far = n + 1, "client connection refused: connection limit reached");
                        }
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    let _open = crate::metrics::connection_opened();
                    if let Err(reason) = connection(stream, shared, admitted, shutdown).await {
                        tracing::info!(%peer, %reason, "closed connection");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "draining client connections"
    );
    let deadline = Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
    let drained = tokio::time::timeout_at(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            drain_ms_max = DRAIN_MS_MAX,
            "client connections still busy at the drain deadline; closed without their answers"
        );
        connections.shutdown().await;
    }
}

/// The length a frame's prefix announces.
fn announced_len(buf: &[u8]) -> usize {
    u32::from_le_bytes(buf[..LENGTH_PREFIX_BYTES].try_into().expect("4 bytes")) as usize
}

/// Answers request `correlation_id` with a header-level `error` and no
/// body; `false` once the connection's writer is gone.
async fn answer_error(
    tx: &mpsc::Sender<Vec<Bytes>>,
    correlation_id: u32,
    error: ErrorCode,
) -> bool {
    tx.send(encode_error_response(correlation_id, error))
        .await
        .is_ok()
}

/// One client connection, until the client closes it, it breaks a limit,
/// or `shutdown` is raised (then it answers what it has routed first).
async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    _admitted: Admitted,
    mut shutdown: ShutdownSignal,
) -> Result<(), String> {
    let limits = &shared.limits;
    let host = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(RESPONSES_QUEUED_MAX);
    let write_timeout = Duration::from_millis(limits.client_write_timeout_ms);
    // The writer says why it stopped; the reader then stops too, and the
    // queued responses go with the writer's receiver.
    let (stopped_tx, mut writer_stopped) = oneshot::channel::<String>();
    let writer = tokio::spawn(async move {
        let why = match write_frames_within(&mut wr, &mut rx, Some(write_timeout)).await {
            Ok(()) => "the writer finished".to_string(),
            Err(e) => format!("writing to the client: {e}"),
        };
        let _ = stopped_tx.send(why);
    });
    let stopped = |r: Result<String, oneshot::error::RecvError>| {
        r.unwrap_or_else(|_| "the writer stopped".to_string())
    };
    let idle = Duration::from_millis(limits.connections_max_idle_ms);
    let frame_timeout = Duration::from_millis(limits.request_read_timeout_ms);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    // The frame being read: when its first byte came, and (once its length
    // is known) its share of the budget.
    let mut frame_started: Option<Instant> = None;
    let mut frame_share: Option<OwnedSemaphorePermit> = None;
    let result = loop {
        if *shutdown.borrow() {
            break Ok(());
        }
        if frame_share.is_none() && buf.len() >= LENGTH_PREFIX_BYTES {
            let len = announced_len(&buf);
            if len > MAX_REQUEST_FRAME_BYTES {
                break Err(format!(
                    "a request frame of {len} bytes is over the limit of {MAX_REQUEST_FRAME_BYTES}"
                ));
            }
            let share = u32::try_from(LENGTH_PREFIX_BYTES + len)
                .expect("a frame under the limit fits in u32");
            // Waiting here stops reading this socket until requests
            // elsewhere finish; the client's stall clock keeps running.
            let deadline = frame_started.unwrap_or_else(Instant::now) + frame_timeout;
            tokio::select! {
                biased;
                r = &mut writer_stopped => break Err(stopped(r)),
                () = raised(&mut shutdown) => break Ok(()),
                p = tokio::time::timeout_at(deadline, Arc::clone(&shared.budget).acquire_many_owned(share)) => match p {
                    Ok(Ok(p)) => frame_share = Some(p),
                    Ok(Err(_)) => break Ok(()),
                    Err(_) => break Err("the broker's request budget stayed full for request_read_timeout_ms".into()),
                },
            }
        }
        let payload = match take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES) {
            Err(e) => break Err(e.to_string()),
            Ok(Some(payload)) => payload,
            Ok(None) => {
                let deadline = match frame_started {
                    Some(t) => t + frame_timeout,
                    None => Instant::now() + idle,
                };
                buf.reserve(READ_CHUNK_BYTES);
                tokio::select! {
                    biased;
                    r = &mut writer_stopped => break Err(stopped(r)),
                    () = raised(&mut shutdown) => break Ok(()),
                    read = tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)) => match read {
                        Err(_) if frame_started.is_some() => {
                            break Err("a request frame did not arrive whole within request_read_timeout_ms".into())
                        }
                        // Idle only with nothing in flight: a parked fetch
                        // or a produce waiting for its acks is activity.
                        Err(_) if in_flight.available_permits() == IN_FLIGHT_MAX => {
                            break Err("idle for connections_max_idle_ms".into())
                        }
                        Err(_) => continue,
                        Ok(Ok(0)) if buf.is_empty() => break Ok(()),
                        Ok(Ok(0)) => break Err("connection closed inside a frame".into()),
                        Ok(Ok(_)) => {
                            frame_started.get_or_insert_with(Instant::now);
                            continue;
                        }
                        Ok(Err(e)) => break Err(e.to_string()),
                    },
                }
            }
        };
        // The next frame, if already begun, starts its clock now.
        frame_started = (!buf.is_empty()).then(Instant::now);
        let share = frame_share.take();
        let (header, request) = match decode_request(payload) {
            Ok(r) => r,
            Err(RequestFrameError::Unsupported { header, error }) => {
                if !answer_error(&tx, header.correlation_id, error).await {
                    break Ok(());
                }
                continue;
            }
            Err(RequestFrameError::Malformed(e)) => break Err(format!("malformed request: {e}")),
        };
        let permit = tokio::select! {
            biased;
            r = &mut writer_stopped => break Err(stopped(r)),
            () = raised(&mut shutdown) => break Ok(()),
            p = Arc::clone(&in_flight).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break Ok(()),
            },
        };
        let tx = tx.clone();
        let caller = Caller {
            client_id: header.client_id.clone(),
            host: host.clone(),
        };
        let at_shutdown = fetch_at_shutdown(&request);
        let api = request.api_key();
        let started = std::time::Instant::now();
        // A produce is staged here (by `route`, before it returns), before
        // the next request is read: its proposals are queued in the order
        // the requests arrived, so a client may pipeline produce requests
        // to one partition. The waits for acknowledgements overlap (in the
        // task below, where any other request is started too).
        let routed = route(&shared.broker, request, &caller).await;
        let share = match routed {
            // Once staged, a produce's bytes are the log's (proposed, and
            // bounded there by the leader's uncommitted bytes) or refused:
            // they leave the request budget, as Kafka's pool frees a request
            // once handled, not once its acknowledgements arrive.
            Routed::Produce(_) => {
                drop(share);
                None
            }
            Routed::Answer(_) => share,
        };
        let broker = Arc::clone(&shared.broker);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let response = match at_shutdown {
                None => routed.respond().await,
                // A parked fetch answers at shutdown with what it can read
                // now, as when its wait ends: the client learns the high
                // watermark and goes elsewhere, rather than holding the
                // drain up for the rest of its wait.
                Some(now) => tokio::select! {
                    r = routed.respond() => r,
                    () = raised(&mut shutdown) => route(&broker, now, &caller).await.respond().await,
                },
            };
            crate::metrics::request_handled(api, started.elapsed(), response.as_ref());
            if let Some(response) = response {
                let _ = tx
                    .send(encode_response(header.correlation_id, &response))
                    .await;
            }
            // Other requests' bytes count against the budget until here.
            drop(share);
            drop(permit);
        });
    };
    match result {
        Ok(()) => {
            // Let the requests in flight answer, then close (the writer's
            // half closes as it ends).
            drop(tx);
            let _ = writer.await;
            if *shutdown.borrow() {
                linger(&mut rd, &mut buf).await;
            }
        }
        // Bad input: close at once, without waiting for anything.
        Err(_) => writer.abort(),
    }
    result
}

/// For a fetch that may park, the same fetch with no wait: what answers it
/// if the broker shuts down while it is parked.
fn fetch_at_shutdown(request: &Request) -> Option<Request> {
    match request {
        Request::Fetch(f) if f.max_wait_ms > 0 => Some(Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            ..f.clone()
        })),
        _ => None,
    }
}

/// Reads and discards what the client still sends until it closes its
/// side, at most [`LINGER_MS_MAX`]: a socket closed with unread bytes
/// resets the connection, and the client may lose responses it had not
/// read yet. With nothing unread (the usual case) it returns at once.
async fn linger(rd: &mut OwnedReadHalf, buf: &mut BytesMut) {
    buf.clear();
    buf.reserve(READ_CHUNK_BYTES);
    match rd.try_read_buf(buf) {
        Ok(n) if n > 0 => {}
        _ => return,
    }
    let deadline = Instant::now() + Duration::from_millis(LINGER_MS_MAX);
    loop {
        buf.clear();
        buf.reserve(READ_CHUNK_BYTES);
        match tokio::time::timeout_at(deadline, rd.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}
