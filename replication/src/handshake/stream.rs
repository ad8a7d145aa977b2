//! The handshake run over a byte stream (a TCP stream, or a TLS stream
//! wrapping one), with fresh random nonces. Nothing but handshake messages
//! is written until the other side is authenticated.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    Acceptor, CHALLENGE_BYTES, ClusterSecret, Dialer, End, HELLO_BYTES, HandshakeError, Met,
    NONCE_BYTES, PROOF_BYTES,
};
use crate::ids::{BrokerId, Incarnation};

/// A fresh random nonce from the thread's CSPRNG (seeded by the OS).
pub fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0; NONCE_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    nonce
}

/// Runs the dialer's side over `stream`: from `me` to `peer`, whose
/// incarnation this broker last saw as `known`. On success the stream is
/// the peer's, ready for frames.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    me: End,
    peer: BrokerId,
    known: Incarnation,
) -> Result<Met, HandshakeError> {
    let (dialer, hello) = Dialer::start(secret, me, peer, known, fresh_nonce());
    stream.write_all(&hello).await?;
    let mut challenge = [0; CHALLENGE_BYTES];
    stream.read_exact(&mut challenge).await?;
    let (met, proof) = dialer.on_challenge(&challenge)?;
    stream.write_all(&proof).await?;
    stream.flush().await?;
    Ok(met)
}

/// Runs the acceptor's side over `stream`, for `me`, accepting dialers
/// that `dials_me` names. Returns what the authenticated dialer says; on
/// an error nothing but (perhaps) the challenge has been written to the
/// stream.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    me: End,
    dials_me: impl Fn(BrokerId) -> bool,
    known: impl Fn(BrokerId) -> Incarnation,
) -> Result<Met, HandshakeError> {
    let mut hello = [0; HELLO_BYTES];
    stream.read_exact(&mut hello).await?;
    let (acceptor, challenge) =
        Acceptor::on_hello(secret, me, dials_me, known, &hello, fresh_nonce())?;
    stream.write_all(&challenge).await?;
    stream.flush().await?;
    let mut proof = [0; PROOF_BYTES];
    stream.read_exact(&mut proof).await?;
    acceptor.on_proof(&proof)
}
