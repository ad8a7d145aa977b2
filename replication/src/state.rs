//! What a replica persists beside its log: the Raft hard state, the
//! truncated state (the snapshot point) and the group's membership, in a
//! file a torn write cannot destroy.
//!
//! # File layout
//!
//! Two fixed slots of [`SLOT_BYTES`] each; a save writes one slot whole and
//! never the slot holding the newest *synced* state, so a crash during a
//! write (or the loss of unsynced writes) always leaves that state readable.
//! Loading takes the valid slot with the highest sequence number. All
//! integers little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `RST2` |
//! | 4 | 8 | sequence number (grows by one per save) |
//! | 12 | 8 | hard state: term |
//! | 20 | 8 | hard state: vote (broker id, 0 = none) |
//! | 28 | 8 | hard state: commit (Raft index) |
//! | 36 | 8 | truncated: Raft index of the last entry no longer in the log |
//! | 44 | 8 | truncated: its term |
//! | 52 | 8 | truncated: next offset (the log start offset) |
//! | 60 | 8 | membership index: the Raft index of the last membership change applied (0: none, the group's first membership) |
//! | 68 | 1 | membership: auto_leave (0 or 1) |
//! | 69 | 2 × 4 | membership: counts of voters, learners, outgoing voters, next learners |
//! | 77 | 8 × n | the broker ids of those four lists, in that order |
//! | 77 + 8n | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! The rest of the slot is zero. At most [`MEMBERS_MAX`] ids in all.
//!
//! The membership saved is the group's current one, as of the last
//! membership change applied, not as of the snapshot point: a replica
//! reopened runs with it at once and skips the change entries at or below
//! the membership index when they are applied again. (Keeping it as of
//! the snapshot point would need every membership since, for logs whose
//! start never moves.)
//!
//! Slots of the first layout (`RST1`, written before membership changes
//! existed) load as before: the same fields with no membership index (0)
//! at offset 60 shifted out, their membership the group's first one.
//!
//! Invariants: a loaded state's commit never lies below its truncated index
//! (checked here) nor beyond the last durable entry (checked by the log's
//! owner, which knows the log).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rill_storage::{Offset, RaftIndex, Term};

use crate::error::ReplicationError;
use crate::ids::BrokerId;

/// Size of one slot, bytes.
pub const SLOT_BYTES: usize = 4096;
/// Most broker ids a conf state may hold (all four lists together).
pub const MEMBERS_MAX: usize = 256;
const MAGIC: &[u8; 4] = b"RST2";
const FIXED_BYTES: usize = 77;
/// The first layout's magic; its fixed part ends 8 bytes sooner (no
/// membership index).
const MAGIC_V1: &[u8; 4] = b"RST1";
const FIXED_BYTES_V1: usize = 69;

/// Raft's hard state: what a replica must never forget once it has acted
/// on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// The current term.
    pub term: Term,
    /// Whom this replica voted for in `term` (`None`: nobody yet).
    pub vote: Option<BrokerId>,
    /// The highest entry known committed.
    pub commit: RaftIndex,
}

/// The membership of a group, as raft-rs's `ConfState`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Voters (the incoming config when joint).
    pub voters: Vec<BrokerId>,
    /// Learners.
    pub learners: Vec<BrokerId>,
    /// Voters of the outgoing config (non-empty only when joint).
    pub voters_outgoing: Vec<BrokerId>,
    /// Learners once the joint config is left.
    pub learners_next: Vec<BrokerId>,
    /// Whether raft-rs leaves the joint config by itself.
    pub auto_leave: bool,
}

impl Membership {
    /// A simple configuration of `voters`.
    pub fn voters(voters: impl IntoIterator<Item = BrokerId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    fn lists(&self) -> [&Vec<BrokerId>; 4] {
        [
            &self.voters,
            &self.learners,
            &self.voters_outgoing,
            &self.learners_next,
        ]
    }

    /// Total number of ids in the four lists.
    pub fn member_count(&self) -> usize {
        self.lists().iter().map(|l| l.len()).sum()
    }

    /// As raft-rs's type.
    pub fn to_raft(&self) -> raft::eraftpb::ConfState {
        let ids = |l: &Vec<BrokerId>| l.iter().map(|b| b.get()).collect::<Vec<u64>>();
        raft::eraftpb::ConfState {
            voters: ids(&self.voters),
            learners: ids(&self.learners),
            voters_outgoing: ids(&self.voters_outgoing),
            learners_next: ids(&self.learners_next),
            auto_leave: self.auto_leave,
            ..raft::eraftpb::ConfState::default()
        }
    }

    /// From raft-rs's type.
    pub fn from_raft(cs: &raft::eraftpb::ConfState) -> Membership {
        let ids = |l: &[u64]| l.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
        Membership {
            voters: ids(&cs.voters),
            learners: ids(&cs.learners),
            voters_outgoing: ids(&cs.voters_outgoing),
            learners_next: ids(&cs.learners_next),
            auto_leave: cs.auto_leave,
        }
    }
}

/// The snapshot point: everything up to `index` is no longer in the log (it
/// was removed by retention, or never received because the replica was
/// restored from a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruncatedState {
    /// The last Raft index no longer stored (0: nothing truncated).
    pub index: RaftIndex,
    /// The term of that entry (0 when `index` is 0).
    pub term: Term,
    /// The offset the first stored record takes (the log start offset).
    pub next_offset: Offset,
}

/// Everything a replica persists beside its log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// Raft's hard state.
    pub hard: HardState,
    /// The snapshot point.
    pub truncated: TruncatedState,
    /// The group's membership as of `membership_index`.
    pub membership: Membership,
    /// The Raft index of the last membership change `membership`
    /// reflects; 0 for the group's first membership.
    pub membership_index: RaftIndex,
}

impl ReplicaState {
    /// The state of a replica created with `membership` and nothing else.
    pub fn initial(membership: Membership) -> ReplicaState {
        ReplicaState {
            membership,
            ..ReplicaState::default()
        }
    }

    /// Encodes one slot with sequence number `sequence`.
    pub fn encode_slot(&self, sequence: u64) -> Result<[u8; SLOT_BYTES], ReplicationError> {
        let m = &self.membership;
        if m.member_count() > MEMBERS_MAX {
            return Err(ReplicationError::TooManyMembers {
                count: m.member_count(),
                max: MEMBERS_MAX,
            });
        }
        let mut out = [0u8; SLOT_BYTES];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(MAGIC);
        put(&sequence.to_le_bytes());
        put(&self.hard.term.get().to_le_bytes());
        put(&self.hard.vote.map_or(0, BrokerId::get).to_le_bytes());
        put(&self.hard.commit.get().to_le_bytes());
        put(&self.truncated.index.get().to_le_bytes());
        put(&self.truncated.term.get().to_le_bytes());
        put(&self.truncated.next_offset.get().to_le_bytes());
        put(&self.membership_index.get().to_le_bytes());
        put(&[u8::from(m.auto_leave)]);
        for list in m.lists() {
            put(&(list.len() as u16).to_le_bytes());
        }
        for list in m.lists() {
            for id in list {
                put(&id.get().to_le_bytes());
            }
        }
        debug_assert_eq!(at, FIXED_BYTES + 8 * m.member_count());
        let crc = crc32fast::hash(&out[..at]);
        out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a slot: its sequence number and state, or `None` when the
    /// slot is empty, torn or corrupt.
    pub fn decode_slot(slot: &[u8]) -> Option<(u64, ReplicaState)> {
        // The first layout lacks the membership index: everything after
        // offset 60 sits 8 bytes sooner.
        let (fixed, shift) = match slot.get(..4)? {
            m if m == MAGIC => (FIXED_BYTES, 8),
            m if m == MAGIC_V1 => (FIXED_BYTES_V1, 0),
            _ => return None,
        };
        if slot.len() < fixed + 4 {
            return None;
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().expect("8 bytes in bounds"));
        let u16_at = |at: usize| {
            u16::from_le_bytes(slot[at..at + 2].try_into().expect("2 bytes in bounds")) as usize
        };
        let counts = [
            u16_at(61 + shift),
            u16_at(63 + shift),
            u16_at(65 + shift),
            u16_at(67 + shift),
        ];
        let n: usize = counts.iter().sum();
        if n > MEMBERS_MAX {
            return None;
        }
        let end = fixed + 8 * n;
        if end + 4 > slot.len() {
            return None;
        }
        let crc = u32::from_le_bytes(slot[end..end + 4].try_into().expect("4 bytes in bounds"));
        if crc != crc32fast::hash(&slot[..end]) {
            return None;
        }
        let auto_leave = match slot[60 + shift] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let mut at = fixed;
        let mut lists: [Vec<BrokerId>; 4] = Default::default();
        for (list, count) in lists.iter_mut().zip(counts) {
            for _ in 0..count {
                list.push(BrokerId(u64_at(at)));
                at += 8;
            }
        }
        let [voters, learners, voters_outgoing, learners_next] = lists;
        let vote = u64_at(20);
        let state = ReplicaState {
            hard: HardState {
                term: Term(u64_at(12)),
                vote: (vote != 0).then_some(BrokerId(vote)),
                commit: RaftIndex(u64_at(28)),
            },
            truncated: TruncatedState {
                index: RaftIndex(u64_at(36)),
                term: Term(u64_at(44)),
                next_offset: Offset(u64_at(52)),
            },
            membership: Membership {
                voters,
                learners,
                voters_outgoing,
                learners_next,
                auto_leave,
            },
            membership_index: RaftIndex(if shift == 0 { 0 } else { u64_at(60) }),
        };
        if state.hard.commit < state.truncated.index {
            // Everything truncated was committed: a slot saying otherwise
            // was not written by rill.
            return None;
        }
        Some((u64_at(4), state))
    }
}

/// Where a replica's [`ReplicaState`] is kept. Behind a trait so the
/// simulator can keep it in memory and forget unsynced saves on a crash.
pub trait StateStore: Send + std::fmt::Debug {
    /// Writes `state`. When `durable` is asked for, returns the sync that
    /// makes it so: the caller runs it (on any thread, with the round's
    /// other syncs) and hands it back to [`StateStore::complete_sync`]
    /// before relying on the state. No other save may happen in between.
    fn save(
        &mut self,
        state: &ReplicaState,
        durable: bool,
    ) -> Result<Option<StateSync>, ReplicationError>;

    /// Records that a sync returned by [`StateStore::save`] ran.
    fn complete_sync(&mut self, done: StateSync);
}

/// A pending sync of a state store's writes. `Send`: run it anywhere.
#[derive(Debug)]
#[must_use = "a state is only durable once its sync has run and completed"]
pub struct StateSync {
    file: Option<(Arc<File>, PathBuf)>,
    /// The directory to sync after the file: the file's own entry in it
    /// may not be durable yet.
    dir: Option<PathBuf>,
    /// The directory's parent (the data directory), synced last: the
    /// replica directory's own entry there may not be durable yet.
    parent: Option<PathBuf>,
    slot: usize,
    ran: bool,
}

impl StateSync {
    /// A sync with nothing to do (a store without files).
    pub fn in_memory(slot: usize) -> StateSync {
        StateSync {
            file: None,
            dir: None,
            parent: None,
            slot,
            ran: false,
        }
    }

    /// The slot it makes durable.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Runs the sync (fdatasync of the state file, then of its directory
    /// when the file's entry there is not known durable, then of that
    /// directory's parent when the directory's own entry is not).
    pub fn run(mut self) -> Result<StateSync, ReplicationError> {
        if let Some((file, path)) = &self.file {
            file.sync_data()
                .map_err(ReplicationError::io("sync replica state", path))?;
        }
        for dir in [&self.dir, &self.parent].into_iter().flatten() {
            rill_storage::sync_dir(dir)?;
        }
        self.ran = true;
        Ok(self)
    }

    /// Whether it syncs the state file's directory too (the file's first
    /// durable save since it was created).
    pub fn syncs_dir(&self) -> bool {
        self.dir.is_some()
    }

    /// The parent of the state file's directory, when it syncs it too (the
    /// first durable save since the store was opened: the replica
    /// directory may have been created without a sync, by this open or by
    /// one a crash interrupted).
    pub fn parent_dir_to_sync(&self) -> Option<&Path> {
        self.parent.as_deref()
    }

    /// Whether [`StateSync::run`] succeeded.
    pub fn ran(&self) -> bool {
        self.ran
    }
}

/// The file-backed [`StateStore`]: `raft.state` in the replica's directory.
#[derive(Debug)]
pub struct FileStateStore {
    file: Arc<File>,
    path: PathBuf,
    sequence: u64,
    /// The slot holding the newest state known synced: never written.
    synced_slot: usize,
    /// Whether the file's entry in its directory may not be durable (the
    /// file was created without a sync): the next sync syncs the directory
    /// too.
    dir_unsynced: bool,
    /// Whether the directory's entry in its parent may not be durable: the
    /// next sync syncs the parent too.
    parent_unsynced: bool,
}

impl FileStateStore {
    /// The file name inside a replica's directory.
    pub const FILE_NAME: &'static str = "raft.state";

    /// Opens the state file in `dir`, creating it with `initial` (written,
    /// not synced: the first durable save syncs it and the directory) when
    /// there is none. Returns the store and the newest valid state.
    pub fn open(
        dir: &Path,
        initial: impl FnOnce() -> ReplicaState,
    ) -> Result<(FileStateStore, ReplicaState), ReplicationError> {
        let path = dir.join(Self::FILE_NAME);
        let exists = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(ReplicationError::io("open replica state", &path))?;
        let mut store = FileStateStore {
            file: Arc::new(file),
            path: path.clone(),
            sequence: 0,
            synced_slot: 1,
            dir_unsynced: false,
            // A replica directory is created without a sync (a topic of
            // many partitions would otherwise sync the data directory once
            // per partition on the Raft thread), and nothing here knows
            // whether an earlier open's first durable save ever ran: the
            // first durable save of this open syncs the parent with the
            // state. A replica acknowledges nothing before it (a term is
            // saved durably before anything is said in it), and a machine
            // crash before it loses nothing the next open does not make
            // again.
            parent_unsynced: true,
        };
        let mut slots = Vec::with_capacity(2);
        if exists {
            for slot in 0..2 {
                let mut buf = vec![0u8; SLOT_BYTES];
                let n = read_at_most(&store.file, &mut buf, (slot * SLOT_BYTES) as u64)
                    .map_err(ReplicationError::io("read replica state", &path))?;
                if let Some(decoded) = ReplicaState::decode_slot(&buf[..n]) {
                    slots.push((decoded.0, slot, decoded.1));
                }
            }
        }
        let newest = slots.into_iter().max_by_key(|(seq, _, _)| *seq);
        let state = match newest {
            Some((seq, slot, state)) => {
                // It may have been read from the page cache only (saved
                // without a sync before a crash): sync it, and the file's
                // entry in the directory (created without a sync, and maybe
                // killed before its first one), before treating its slot as
                // the one never to overwrite.
                store
                    .file
                    .sync_data()
                    .map_err(ReplicationError::io("sync replica state", &path))?;
                rill_storage::sync_dir(dir)?;
                store.sequence = seq;
                store.synced_slot = slot;
                state
            }
            // Nothing valid past the first slot's bytes: only the initial
            // save was ever tried (and torn), so nothing was acted on yet.
            None if exists && store_len(&store)? > SLOT_BYTES as u64 => {
                return Err(ReplicationError::CorruptState { path });
            }
            // Saved without a sync: until the replica saves a term or a
            // vote (durable, the directory with it), a crash loses nothing
            // that counts, and the next open saves the initial state again.
            // A topic of many partitions is created without two syncs per
            // partition.
            None => {
                let state = initial();
                let none = store.save(&state, false)?;
                debug_assert!(none.is_none(), "a save without a sync returns none");
                store.dir_unsynced = true;
                state
            }
        };
        Ok((store, state))
    }
}

fn store_len(store: &FileStateStore) -> Result<u64, ReplicationError> {
    Ok(store
        .file
        .metadata()
        .map_err(ReplicationError::io("stat replica state", &store.path))?
        .len())
}

fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl StateStore for FileStateStore {
    fn save(
        &mut self,
        state: &ReplicaState,
        durable: bool,
    ) -> Result<Option<StateSync>, ReplicationError> {
        let slot = 1 - self.synced_slot;
        let bytes = state.encode_slot(self.sequence + 1)?;
        self.file
            .write_all_at(&bytes, (slot * SLOT_BYTES) as u64)
            .map_err(ReplicationError::io("write replica state", &self.path))?;
        self.sequence += 1;
        Ok(durable.then(|| StateSync {
            file: Some((self.file.clone(), self.path.clone())),
            dir: self
                .dir_unsynced
                .then(|| self.path.parent().map(Path::to_path_buf))
                .flatten(),
            parent: self
                .parent_unsynced
                .then(|| self.path.parent().and_then(Path::parent))
                .flatten()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                }),
            slot,
            ran: false,
        }))
    }

    fn complete_sync(&mut self, done: StateSync) {
        if done.ran {
            self.synced_slot = done.slot;
            if done.dir.is_some() {
                self.dir_unsynced = false;
            }
            if done.parent.is_some() {
                self.parent_unsynced = false;
            }
        }
    }
}

/// A [`StateStore`] in memory, for the simulator and tests: it keeps the
/// newest saved state and the newest *synced* one, so a simulated crash can
/// forget what was never synced ([`MemoryStateStore::crash`]). Clones share
/// the same "disk", which outlives the replica that used it.
#[derive(Debug, Clone, Default)]
pub struct MemoryStateStore {
    disk: Arc<std::sync::Mutex<MemoryDisk>>,
}

#[derive(Debug, Default)]
struct MemoryDisk {
    latest: Option<ReplicaState>,
    synced: Option<ReplicaState>,
}

impl MemoryStateStore {
    fn disk(&self) -> std::sync::MutexGuard<'_, MemoryDisk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state a replica opening this store finds (`initial` when none
    /// was ever saved; it is then saved as synced).
    pub fn load(&self, initial: impl FnOnce() -> ReplicaState) -> ReplicaState {
        let mut disk = self.disk();
        match &disk.latest {
            Some(s) => s.clone(),
            None => {
                let s = initial();
                disk.latest = Some(s.clone());
                disk.synced = Some(s.clone());
                s
            }
        }
    }

    /// A crash: unsynced saves are lost, unless `keep_unsynced` (a write
    /// that happened to reach the disk).
    pub fn crash(&self, keep_unsynced: bool) {
        let mut disk = self.disk();
        if !keep_unsynced {
            disk.latest = disk.synced.clone();
        }
    }
}

impl StateStore for MemoryStateStore {
    fn save(
        &mut self,
        state: &ReplicaState,
        durable: bool,
    ) -> Result<Option<StateSync>, ReplicationError> {
        self.disk().latest = Some(state.clone());
        Ok(durable.then(|| StateSync::in_memory(0)))
    }

    fn complete_sync(&mut self, done: StateSync) {
        if done.ran() {
            let mut disk = self.disk();
            disk.synced = disk.latest.clone();
        }
    }
}
