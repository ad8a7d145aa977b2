//! The peer transport: one TCP connection per broker pair carrying frames
//! of `(group, message)` pairs in rill's own codec ([`crate::wire`]).
//!
//! - Of the brokers a cluster started with, the one with the lower id
//!   dials; a broker that joined later dials every broker it joined
//!   ([`Dialling`]): the later broker always knows the earlier one's
//!   address, never the other way round (an earlier broker may have been
//!   down when it joined). Both directions share the connection. Before
//!   any frame, the two run the [`crate::handshake`]: each proves it holds
//!   the cluster secret, and the acceptor learns who dialled. A connection
//!   that fails it is closed and logged with its address; it gets no
//!   frame and replaces no peer's connection. Only an authenticated peer's
//!   new connection replaces its own old one, and every frame on it must
//!   name that peer as its sender. An authenticated broker this one does
//!   not know yet (one that joined since) gets a link of its own when it
//!   connects, up to [`PEERS_MAX`]; the Raft thread takes it up at its
//!   next [`Transport::admit_arrivals`].
//! - At most [`HANDSHAKES_PENDING_MAX`] handshakes run at once, each within
//!   [`PEER_HELLO_MS_MAX`]: connections past that are closed at once, so
//!   strangers cannot make a broker hold more than that many sockets.
//! - Frames are length-prefixed (tokio-util's `LengthDelimitedCodec`, a
//!   4-byte big-endian length) with a hard maximum checked before the
//!   payload is read; a frame that is too large or does not decode closes
//!   that connection, nothing else.
//! - Each peer has two bounded queues: heartbeats, votes and responses go
//!   ahead of appends and snapshots. When a queue is full the message is
//!   dropped and reported back, as Raft expects of a lossy network (the
//!   leader probes again; a dropped snapshot is reported as failed).
//! - What arrives waits for the Raft thread in a queue bounded in bytes
//!   ([`INBOUND_BYTES_MAX`], over all peers): past it, reading stops and
//!   TCP pushes back on the senders. Heartbeats and votes queue behind the
//!   appends that arrived before them, so the bound is also how late they
//!   can be: without it, a follower slower than its leaders held hundreds
//!   of MiB of appends and heartbeats reached it over a second late, long
//!   enough for the controller, which sends nothing else, to lose its
//!   leadership to check-quorum.
//! - A writer sends what is queued for a peer in frames of about
//!   [`FRAME_TARGET_BYTES`], urgent messages first, so heartbeats of many
//!   groups travel together and never wait behind more than one frame of
//!   appends. Entry
//!   data of 4 KiB or more is not copied into the frame: it is written
//!   from the log's own bytes, with one vectored write per frame.
//! - Every live peer is heard from at least once a tick: the Raft thread
//!   asks for a beacon (an empty frame when nothing else goes), and what
//!   the readers see of each peer is its liveness
//!   ([`Transport::liveness`]).
//!
//! Here: the links, connecting and reading; `write.rs` the writing half;
//! `liveness.rs` what is known of each peer being alive.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use raft::eraftpb::{Message, MessageType};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

mod liveness;
mod write;

pub use liveness::PeerLiveness;
use liveness::{Backlogged, Liveness};
use write::write_loop;

use crate::handshake::{self, PeerIdentity};
use crate::ids::{BrokerId, GroupId};
pub use crate::outgoing::Dropped;
use crate::outgoing::Outgoing;
use crate::wire::{EntrySpans, WireLimits, decode_frame};

/// Largest peer frame, bytes (also the decoder's limit).
pub const PEER_FRAME_BYTES_MAX: usize = 64 << 20;
/// Messages written per frame, at most (a writer sends the rest next).
pub const FRAME_MESSAGES_MAX: usize = 8192;
/// Largest frame payload a writer builds, bytes: well inside
/// [`PEER_FRAME_BYTES_MAX`], which the receiver enforces, and above the
/// largest append raft-rs sends (one entry of a batch as large as a
/// request may carry, past `max_size_per_msg`).
pub const FRAME_PAYLOAD_BYTES_MAX: usize = PEER_FRAME_BYTES_MAX / 2;
/// A writer adds no more messages to a frame past this many bytes, except
/// the frame's first append (up to [`FRAME_PAYLOAD_BYTES_MAX`]): an urgent
/// message queued while a frame is written waits behind about this much
/// at the sender (the sockets and the receiver's budget add their own).
pub const FRAME_TARGET_BYTES: usize = 4 << 20;
/// Bytes of received frames waiting for the Raft thread, at most (over all
/// peers).
pub const INBOUND_BYTES_MAX: usize = 32 << 20;
/// Bundles of messages queued per peer and priority, at most.
pub const QUEUED_BUNDLES_MAX: usize = 1024;
/// Longest a frame may take to write to a peer before the connection is
/// dropped, ms.
pub const PEER_WRITE_MS_MAX: u64 = 10_000;
/// Longest a connection may stay silent before it is closed, ms.
pub const PEER_IDLE_MS_MAX: u64 = 30_000;
/// Longest a new connection may take to complete the handshake, ms.
pub const PEER_HELLO_MS_MAX: u64 = 5_000;
/// Incoming connections that may be in their handshake at once; more are
/// closed unread.
pub const HANDSHAKES_PENDING_MAX: usize = 64;
/// Longest pause between two attempts to reach a peer, ms.
pub const RECONNECT_MS_MAX: u64 = 1000;
/// Peers one broker links to, at most: a broker that joined past it is
/// refused at the handshake's end.
pub const PEERS_MAX: usize = 256;

/// Which of the peers given at start this broker dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialling {
    /// Those with higher ids (the brokers a cluster started with).
    HigherIds,
    /// All of them (a broker that joined a running cluster: they were
    /// there before it, and may not know its address).
    Every,
}

/// Messages from a peer, for its groups on this broker.
#[derive(Debug)]
pub struct Inbound {
    /// The sender.
    pub from: BrokerId,
    /// Its messages.
    pub messages: Vec<(GroupId, Message)>,
    /// The frame's share of [`INBOUND_BYTES_MAX`], given back when this is
    /// dropped (once its messages are stepped).
    _budget: OwnedSemaphorePermit,
}

/// The messages one [`Transport::send`] queues for one peer at one
/// priority, each with its entries' file spans. A writer splits and joins
/// bundles into frames as they fit.
type Bundle = Vec<(GroupId, Message, EntrySpans)>;

/// One peer: its queues and its current connection.
#[derive(Debug)]
struct Link {
    urgent: mpsc::Sender<Bundle>,
    bulk: mpsc::Sender<Bundle>,
}

/// The write half of a link's connection, with a generation so a closing
/// connection only clears its own slot.
type Slot = Arc<Mutex<Option<(u64, OwnedWriteHalf)>>>;

/// The transport of one broker. See the module documentation.
///
/// Its links are its own (the Raft thread's): sending looks them up with
/// no lock. A peer that connects unknown is linked by the acceptor in what
/// it shares, and here once the Raft thread admits it.
#[derive(Debug)]
pub struct Transport {
    id: BrokerId,
    links: BTreeMap<BrokerId, Link>,
    liveness: BTreeMap<BrokerId, Arc<Liveness>>,
    shared: Arc<Shared>,
}

/// What every connection task of a transport shares.
#[derive(Debug)]
struct Shared {
    inbound: mpsc::Sender<Inbound>,
    /// The inbound queue's byte budget ([`INBOUND_BYTES_MAX`]).
    budget: Arc<Semaphore>,
    identity: PeerIdentity,
    /// When the transport started: liveness times count from it.
    epoch: std::time::Instant,
    /// The runtime it started on, where a peer added later gets its
    /// tasks (the Raft thread that adds it is not one of its threads).
    runtime: tokio::runtime::Handle,
    /// Each known peer's connection slot and liveness, for the acceptor,
    /// and the links of peers that connected unknown, until the Raft
    /// thread admits them. The lock guards map lookups and one insert per
    /// peer linked; nothing waits or does I/O under it.
    peers: std::sync::Mutex<Known>,
}

/// What the acceptor shares with the Raft thread of the peers.
#[derive(Debug, Default)]
struct Known {
    accepted: BTreeMap<BrokerId, Accepted>,
    arrivals: Vec<(BrokerId, Link, Arc<Liveness>)>,
}

/// What the acceptor needs of a known peer.
#[derive(Debug, Clone)]
struct Accepted {
    slot: Slot,
    live: Arc<Liveness>,
}

impl Shared {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.peers
            .lock()
            .expect("the peer map's lock is never held across a panic")
    }

    /// Links `peer`: its queues, writer and liveness; dialled from here
    /// when `addr` is given. The caller holds `known` and has checked the
    /// peer is not linked yet.
    fn link(
        self: &Arc<Self>,
        known: &mut Known,
        me: BrokerId,
        peer: BrokerId,
        addr: Option<&str>,
    ) -> (Link, Arc<Liveness>) {
        let (urgent_tx, urgent_rx) = mpsc::channel(QUEUED_BUNDLES_MAX);
        let (bulk_tx, bulk_rx) = mpsc::channel(QUEUED_BUNDLES_MAX);
        let slot: Slot = Arc::new(Mutex::new(None));
        let live = Arc::new(Liveness::new(self.epoch));
        known.accepted.insert(
            peer,
            Accepted {
                slot: slot.clone(),
                live: Arc::clone(&live),
            },
        );
        self.runtime
            .spawn(write_loop(me, peer, urgent_rx, bulk_rx, slot.clone()));
        if let Some(addr) = addr {
            self.runtime.spawn(dial_loop(
                me,
                peer,
                addr.to_string(),
                slot,
                Reader {
                    inbound: self.inbound.clone(),
                    budget: Arc::clone(&self.budget),
                    live: Arc::clone(&live),
                },
                self.identity.clone(),
            ));
        }
        let link = Link {
            urgent: urgent_tx,
            bulk: bulk_tx,
        };
        (link, live)
    }

    /// What the acceptor needs of `peer`, an authenticated broker: linked
    /// now if it was not known (to be admitted by the Raft thread), `None`
    /// past [`PEERS_MAX`].
    fn accepted_or_arrived(self: &Arc<Self>, me: BrokerId, peer: BrokerId) -> Option<Accepted> {
        let mut known = self.known();
        if let Some(a) = known.accepted.get(&peer) {
            return Some(a.clone());
        }
        if known.accepted.len() >= PEERS_MAX {
            return None;
        }
        let (link, live) = self.link(&mut known, me, peer, None);
        known.arrivals.push((peer, link, live));
        known.accepted.get(&peer).cloned()
    }
}

fn is_urgent(t: MessageType) -> bool {
    !matches!(t, MessageType::MsgAppend | MessageType::MsgSnapshot)
}

impl Transport {
    /// Starts the transport of broker `id` on the current tokio runtime:
    /// accepting on `listener`, dialling the peers with higher ids, and
    /// handing every decoded frame to `inbound`. `peers` lists every other
    /// broker's peer address; every connection passes the handshake with
    /// `identity` first.
    pub fn start(
        id: BrokerId,
        listener: TcpListener,
        peers: BTreeMap<BrokerId, String>,
        dialling: Dialling,
        inbound: mpsc::Sender<Inbound>,
        identity: PeerIdentity,
    ) -> Transport {
        let shared = Arc::new(Shared {
            inbound,
            budget: Arc::new(Semaphore::new(INBOUND_BYTES_MAX)),
            identity,
            epoch: std::time::Instant::now(),
            runtime: tokio::runtime::Handle::current(),
            peers: std::sync::Mutex::new(Known::default()),
        });
        let mut links = BTreeMap::new();
        let mut liveness = BTreeMap::new();
        {
            let mut known = shared.known();
            for (&peer, addr) in peers.iter().filter(|(p, _)| **p != id) {
                let dial = dialling == Dialling::Every || id < peer;
                let (link, live) = shared.link(&mut known, id, peer, dial.then_some(addr.as_str()));
                links.insert(peer, link);
                liveness.insert(peer, live);
            }
        }
        tokio::spawn(accept_loop(id, listener, Arc::clone(&shared)));
        Transport {
            id,
            links,
            liveness,
            shared,
        }
    }

    /// Takes up the links of brokers that connected unknown since the last
    /// call (brokers that joined the cluster after this one started) and
    /// returns their ids. The Raft thread calls it every tick.
    pub fn admit_arrivals(&mut self) -> Vec<BrokerId> {
        let arrived = std::mem::take(&mut self.shared.known().arrivals);
        arrived
            .into_iter()
            .map(|(peer, link, live)| {
                self.links.insert(peer, link);
                self.liveness.insert(peer, live);
                peer
            })
            .collect()
    }

    /// Sends every peer a sign of life: an empty frame, unless something
    /// else is on its way to it already. The Raft thread calls this every
    /// tick, so a peer that hears nothing for several ticks knows this
    /// broker (or its Raft thread) is gone, though every group between
    /// them hibernates. Never waits: a full queue has frames going anyway.
    pub fn beacon(&self) {
        for link in self.links.values() {
            let _ = link.urgent.try_send(Vec::new());
        }
    }

    /// Every peer's liveness as seen from here.
    pub fn liveness(&self) -> Vec<PeerLiveness> {
        self.liveness
            .iter()
            .map(|(peer, l)| {
                let now = l.now_ms();
                PeerLiveness {
                    peer: *peer,
                    connected: l.connections.load(Ordering::Acquire) > 0,
                    since_change_ms: now.saturating_sub(l.changed_ms.load(Ordering::Relaxed)),
                    silent_ms: now.saturating_sub(l.last_frame_ms.load(Ordering::Relaxed)),
                    backlogged: l.backlogged.load(Ordering::Acquire) > 0,
                    connections_opened: l.opened.load(Ordering::Acquire),
                }
            })
            .collect()
    }

    /// This broker.
    pub fn id(&self) -> BrokerId {
        self.id
    }

    /// Queues messages for their peers without waiting; returns those that
    /// could not be queued.
    pub fn send(&self, out: Vec<Outgoing>) -> Vec<Dropped> {
        let mut per_peer: BTreeMap<(BrokerId, bool), Bundle> = BTreeMap::new();
        for o in out {
            let urgent = is_urgent(o.message.get_msg_type());
            per_peer
                .entry((o.to, urgent))
                .or_default()
                .push((o.group, o.message, o.spans));
        }
        let mut dropped = Vec::new();
        for ((to, urgent), bundle) in per_peer {
            let queued = match self.links.get(&to) {
                Some(link) if urgent => link.urgent.try_send(bundle),
                Some(link) => link.bulk.try_send(bundle),
                None => Err(mpsc::error::TrySendError::Closed(bundle)),
            };
            if let Err(
                mpsc::error::TrySendError::Full(bundle) | mpsc::error::TrySendError::Closed(bundle),
            ) = queued
            {
                dropped.extend(bundle.iter().map(|(g, m, _)| Dropped {
                    group: *g,
                    to,
                    snapshot: m.get_msg_type() == MessageType::MsgSnapshot,
                }));
            }
        }
        dropped
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(PEER_FRAME_BYTES_MAX)
        .new_codec()
}

/// Where a connection's reader hands the frames it reads, and what it
/// tells of its peer being alive.
#[derive(Debug, Clone)]
struct Reader {
    inbound: mpsc::Sender<Inbound>,
    budget: Arc<Semaphore>,
    live: Arc<Liveness>,
}

/// Keeps a connection to `peer` (which has a higher id) open.
async fn dial_loop(
    id: BrokerId,
    peer: BrokerId,
    addr: String,
    slot: Slot,
    reader: Reader,
    identity: PeerIdentity,
) {
    let mut backoff_ms = 50;
    let mut generation = 0u64;
    loop {
        match TcpStream::connect(&addr).await {
            Ok(mut stream) => {
                backoff_ms = 50;
                let _ = stream.set_nodelay(true);
                // Per connection: the cluster id may have been learnt since.
                let me = identity.end(id);
                let shaken = tokio::time::timeout(
                    Duration::from_millis(PEER_HELLO_MS_MAX),
                    handshake::dial(
                        &mut stream,
                        &identity.secret,
                        me,
                        peer,
                        identity.book.known(peer),
                    ),
                )
                .await;
                match shaken {
                    Ok(Ok(met)) => {
                        identity.book.met(&met);
                        let (r, w) = stream.into_split();
                        generation += 1;
                        *slot.lock().await = Some((generation, w));
                        tracing::info!(%peer, %addr, "connected to peer");
                        let _ = read_loop(peer, r, BytesMut::new(), &reader).await;
                        let mut s = slot.lock().await;
                        if s.as_ref().is_some_and(|(g, _)| *g == generation) {
                            *s = None;
                        }
                        tracing::info!(%peer, "peer connection closed");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, %addr, error = %e, "peer handshake failed");
                    }
                    Err(_) => tracing::warn!(%peer, %addr, "peer handshake timed out"),
                }
            }
            Err(e) => tracing::debug!(%peer, %addr, error = %e, "cannot reach peer"),
        }
        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = (backoff_ms * 2).min(RECONNECT_MS_MAX);
    }
}

/// Accepts connections from peers with lower ids, each once it has
/// passed the handshake.
async fn accept_loop(id: BrokerId, listener: TcpListener, shared: Arc<Shared>) {
    let mut generation = 1u64 << 32;
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_PENDING_MAX));
    loop {
        let (mut stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(handshaking) = Arc::clone(&handshakes).try_acquire_owned() else {
            tracing::warn!(%addr, "too many peer handshakes at once; connection closed");
            continue;
        };
        generation += 1;
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let identity = &shared.identity;
            // Any broker but this one may dial it: one that joined since
            // is linked once it has proved it holds the secret.
            let dials_me = |b: BrokerId| b != id;
            let me = identity.end(id);
            let shaken = tokio::time::timeout(
                Duration::from_millis(PEER_HELLO_MS_MAX),
                handshake::accept(&mut stream, &identity.secret, me, dials_me, |b| {
                    identity.book.known(b)
                }),
            )
            .await;
            drop(handshaking);
            let from = match shaken {
                Ok(Ok(met)) => {
                    identity.book.met(&met);
                    met.peer.id
                }
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "peer handshake refused; connection closed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%addr, "peer handshake timed out; connection closed");
                    return;
                }
            };
            let Some(Accepted { slot, live }) = shared.accepted_or_arrived(id, from) else {
                tracing::warn!(peer = %from, %addr, "a broker past the most peers linked; connection closed");
                return;
            };
            let (r, w) = stream.into_split();
            *slot.lock().await = Some((generation, w));
            tracing::info!(peer = %from, %addr, "peer connected");
            let reader = Reader {
                inbound: shared.inbound.clone(),
                budget: Arc::clone(&shared.budget),
                live,
            };
            let _ = read_loop(from, r, BytesMut::new(), &reader).await;
            let mut s = slot.lock().await;
            if s.as_ref().is_some_and(|(g, _)| *g == generation) {
                *s = None;
            }
        });
    }
}

fn limits() -> WireLimits {
    WireLimits {
        frame_bytes_max: PEER_FRAME_BYTES_MAX,
        ..WireLimits::default()
    }
}

/// The next frame's payload, or `None` when the connection ends or sends a
/// frame over the maximum (checked from the length prefix, before reading
/// the payload).
async fn read_frame(r: &mut OwnedReadHalf, buf: &mut BytesMut) -> Option<Bytes> {
    let mut codec = codec();
    loop {
        match codec.decode(buf) {
            Ok(Some(payload)) => return Some(payload.freeze()),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "peer frame refused");
                return None;
            }
        }
        buf.reserve(64 * 1024);
        match r.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Hands every frame from `peer` to the reader's inbound queue until the
/// connection ends or misbehaves, keeping the peer's liveness.
async fn read_loop(peer: BrokerId, r: OwnedReadHalf, buf: BytesMut, reader: &Reader) -> Option<()> {
    reader.live.connected();
    let read = read_frames(peer, r, buf, reader).await;
    reader.live.disconnected();
    read
}

async fn read_frames(
    peer: BrokerId,
    mut r: OwnedReadHalf,
    mut buf: BytesMut,
    reader: &Reader,
) -> Option<()> {
    let (inbound, budget, live) = (&reader.inbound, &reader.budget, &reader.live);
    let limits = limits();
    loop {
        // A link quiet this long may be dead without a reset: end it, and
        // the dialer connects again (cheap when it was only idle).
        let payload = tokio::time::timeout(
            Duration::from_millis(PEER_IDLE_MS_MAX),
            read_frame(&mut r, &mut buf),
        )
        .await
        .ok()??;
        live.last_frame_ms.store(live.now_ms(), Ordering::Relaxed);
        // While the frame waits on this broker, the peer's silence is not
        // its own.
        let _waiting = Backlogged::new(live);
        // Nothing more is read until the frame fits the budget (a frame
        // larger than all of it waits for all of it).
        let bytes = payload.len().clamp(1, INBOUND_BYTES_MAX);
        let share = u32::try_from(bytes).expect("INBOUND_BYTES_MAX fits in u32");
        let permit = Arc::clone(budget).acquire_many_owned(share).await.ok()?;
        let frame = match decode_frame(payload, &limits) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "undecodable peer frame; closing the connection");
                return None;
            }
        };
        if frame.from != peer {
            tracing::warn!(%peer, claimed = %frame.from, "peer frame from another sender; closing");
            return None;
        }
        if frame.messages.is_empty() {
            continue;
        }
        inbound
            .send(Inbound {
                from: peer,
                messages: frame.messages,
                _budget: permit,
            })
            .await
            .ok()?;
    }
}

/// Binds a peer listener (for callers that want the port before starting).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
