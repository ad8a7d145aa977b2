//! The client listener: one task per connection reading frames, one task
//! per request, and one writer per connection sending responses in the
//! order they finish (matched by correlation id, so a parked fetch never
//! holds up a produce on the same connection).
//!
//! Limits: a frame above [`MAX_REQUEST_FRAME_BYTES`] or one that cannot be
//! parsed closes that connection at once; at most [`IN_FLIGHT_MAX`]
//! requests per connection are handled at a time (reading pauses beyond
//! that); at most [`RESPONSES_QUEUED_MAX`] responses wait for the socket.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rill_client::protocol::{
    MAX_REQUEST_FRAME_BYTES, Request, RequestFrameError, decode_request, encode_error_response,
    encode_response, take_frame,
};
use rill_client::writer::write_frames;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::handlers::{FORWARDED_CLIENT_ID, finish_produce, handle, stage_produce};
use crate::state::Broker;

/// Requests handled at once per connection.
pub const IN_FLIGHT_MAX: usize = 64;
/// Encoded responses waiting for the socket per connection.
pub const RESPONSES_QUEUED_MAX: usize = 64;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let broker = Arc::clone(&broker);
                tokio::spawn(async move {
                    if let Err(reason) = connection(stream, broker).await {
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
}

async fn connection(stream: TcpStream, broker: Arc<Broker>) -> Result<(), String> {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(RESPONSES_QUEUED_MAX);
    let writer = tokio::spawn(async move {
        // A failed write ends the writer; the reader sees the socket close.
        let _ = write_frames(&mut wr, &mut rx).await;
    });
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let result = loop {
        let payload = match take_frame(&mut buf, MAX_REQUEST_FRAME_BYTES) {
            Err(e) => break Err(e.to_string()),
            Ok(Some(payload)) => payload,
            Ok(None) => {
                buf.reserve(READ_CHUNK_BYTES);
                match rd.read_buf(&mut buf).await {
                    Ok(0) if buf.is_empty() => break Ok(()),
                    Ok(0) => break Err("connection closed inside a frame".into()),
                    Ok(_) => continue,
                    Err(e) => break Err(e.to_string()),
                }
            }
        };
        let (header, request) = match decode_request(payload) {
            Ok(r) => r,
            Err(RequestFrameError::Unsupported { header, error }) => {
                if tx
                    .send(encode_error_response(header.correlation_id, error))
                    .await
                    .is_err()
                {
                    break Ok(());
                }
                continue;
            }
            Err(RequestFrameError::Malformed(e)) => break Err(format!("malformed request: {e}")),
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break Ok(());
        };
        let tx = tx.clone();
        let broker = Arc::clone(&broker);
        // A produce is staged here, before the next request is read: its
        // proposals are queued in the order the requests arrived, so a
        // client may pipeline produce requests to one partition. The waits
        // for acknowledgements overlap.
        let staged = match request {
            Request::Produce(p) => Ok(stage_produce(&broker, p).await),
            other => Err(other),
        };
        tokio::spawn(async move {
            let forwarded = header.client_id == FORWARDED_CLIENT_ID;
            let response = match staged {
                Ok(staged) => finish_produce(staged).await,
                Err(request) => handle(&broker, request, forwarded).await,
            };
            if let Some(response) = response {
                let _ = tx
                    .send(encode_response(header.correlation_id, &response))
                    .await;
            }
            drop(permit);
        });
    };
    match result {
        Ok(()) => {
            // Let the requests in flight answer, then close.
            drop(tx);
            let _ = writer.await;
        }
        // Bad input: close at once, without waiting for anything.
        Err(_) => writer.abort(),
    }
    result
}
