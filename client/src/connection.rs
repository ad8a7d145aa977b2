//! One TCP connection to a broker, shared by many requests at once.
//!
//! A reader task matches each response to its request by correlation id, so
//! responses may arrive in any order; a writer task sends frames as they are
//! queued. At most [`IN_FLIGHT_MAX`] requests are outstanding; more wait for
//! a slot. When the connection breaks, every pending request fails with
//! [`ClientError::Closed`] and the connection reports itself closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::error::ClientError;
use crate::protocol::{
    ApiKey, MAX_RESPONSE_FRAME_BYTES, Request, RequestHeader, Response, decode_response,
    decode_response_header, encode_request, take_frame,
};
use crate::writer::write_frames;

/// Requests outstanding on one connection, at most.
pub const IN_FLIGHT_MAX: usize = 128;
/// Frames queued for the writer, at most.
const OUTGOING_MAX: usize = 128;

type Reply = oneshot::Sender<Result<Response, ClientError>>;

/// A connection to one broker.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    client_id: String,
    outgoing: mpsc::Sender<Vec<Bytes>>,
    /// Requests waiting for their response, by correlation id. Guards only
    /// inserts and removals; nothing else runs under it.
    pending: Arc<Mutex<HashMap<u32, (ApiKey, Reply)>>>,
    slots: Arc<Semaphore>,
    next_id: AtomicU32,
    closed: Arc<AtomicBool>,
}

fn fail_all(pending: &Mutex<HashMap<u32, (ApiKey, Reply)>>, addr: &str) {
    let drained: Vec<_> = pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    for (_, (_, reply)) in drained {
        let _ = reply.send(Err(ClientError::Closed {
            addr: addr.to_string(),
        }));
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), giving up after `timeout`.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let io = |e: std::io::Error| ClientError::Io {
            addr: addr.to_string(),
            message: e.to_string(),
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                ms: timeout.as_millis() as u64,
            })?
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (outgoing, mut rx) = mpsc::channel::<Vec<Bytes>>(OUTGOING_MAX);
        let pending: Arc<Mutex<HashMap<u32, (ApiKey, Reply)>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        {
            let (pending, closed, addr) =
                (Arc::clone(&pending), Arc::clone(&closed), addr.to_string());
            tokio::spawn(async move {
                if write_frames(&mut wr, &mut rx).await.is_err() {
                    closed.store(true, Ordering::Release);
                    fail_all(&pending, &addr);
                }
            });
        }
        {
            let (pending, closed, addr) =
                (Arc::clone(&pending), Arc::clone(&closed), addr.to_string());
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                loop {
                    let payload = match take_frame(&mut buf, MAX_RESPONSE_FRAME_BYTES) {
                        Ok(Some(p)) => p,
                        Ok(None) => {
                            buf.reserve(64 * 1024);
                            match rd.read_buf(&mut buf).await {
                                Ok(n) if n > 0 => continue,
                                _ => break,
                            }
                        }
                        Err(_) => break,
                    };
                    let Ok(header) = decode_response_header(&payload) else {
                        break;
                    };
                    let entry = pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&header.correlation_id);
                    let Some((api, reply)) = entry else { continue };
                    let result = match decode_response(payload, api) {
                        Ok((h, _)) if !h.error.is_ok() => Err(ClientError::code(h.error)),
                        Ok((_, Some(r))) => Ok(r),
                        Ok((_, None)) => Err(ClientError::code(h_unknown())),
                        Err(error) => Err(ClientError::Protocol {
                            addr: addr.clone(),
                            error,
                        }),
                    };
                    let _ = reply.send(result);
                }
                closed.store(true, Ordering::Release);
                fail_all(&pending, &addr);
            });
        }
        Ok(Connection {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            outgoing,
            pending,
            slots: Arc::new(Semaphore::new(IN_FLIGHT_MAX)),
            next_id: AtomicU32::new(1),
            closed,
        })
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection broke.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn frame(&self, request: &Request) -> (u32, Vec<Bytes>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader {
            api_key: request.api_key() as u16,
            api_version: 0,
            correlation_id: id,
            client_id: self.client_id.clone(),
        };
        (id, encode_request(&header, request))
    }

    /// Sends `request` and waits at most `timeout` for its response.
    pub async fn request(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        self.enqueue(request).await?.wait(timeout).await
    }

    /// Queues `request` for sending and returns the wait for its response.
    /// Requests queued one after another by one task go out on the socket
    /// in that order, which a caller pipelining several requests to the
    /// same partition relies on.
    pub async fn enqueue(&self, request: Request) -> Result<PendingResponse, ClientError> {
        let closed = || ClientError::Closed {
            addr: self.addr.clone(),
        };
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        if self.is_closed() {
            return Err(closed());
        }
        let (id, frame) = self.frame(&request);
        let (reply, answer) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (request.api_key(), reply));
        if self.outgoing.send(frame).await.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(closed());
        }
        Ok(PendingResponse {
            addr: self.addr.clone(),
            id,
            answer,
            pending: Arc::clone(&self.pending),
            _slot: slot,
        })
    }

    /// Sends a request that gets no response (a produce with `acks=0`).
    pub async fn send_only(&self, request: Request) -> Result<(), ClientError> {
        let (_, frame) = self.frame(&request);
        self.outgoing
            .send(frame)
            .await
            .map_err(|_| ClientError::Closed {
                addr: self.addr.clone(),
            })
    }
}

/// A request on the wire, waiting for its response. It holds one of the
/// connection's [`IN_FLIGHT_MAX`] slots until it is dropped.
#[derive(Debug)]
pub struct PendingResponse {
    addr: String,
    id: u32,
    answer: oneshot::Receiver<Result<Response, ClientError>>,
    pending: Arc<Mutex<HashMap<u32, (ApiKey, Reply)>>>,
    _slot: OwnedSemaphorePermit,
}

impl PendingResponse {
    /// Waits at most `timeout` for the response.
    pub async fn wait(self, timeout: Duration) -> Result<Response, ClientError> {
        match tokio::time::timeout(timeout, self.answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed { addr: self.addr }),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.id);
                Err(ClientError::Timeout {
                    ms: timeout.as_millis() as u64,
                })
            }
        }
    }
}

/// A response with neither an error nor a body cannot be produced by
/// `decode_response`; treat it as an unknown failure rather than panic.
fn h_unknown() -> crate::protocol::ErrorCode {
    crate::protocol::ErrorCode::Unknown
}
