//! Brokers starting, crashing and stopping, and replicas closed and
//! opened again: what survives each (a power cut forgets every byte not
//! synced; a controlled shutdown hands leaderships over and loses
//! nothing).

use super::*;

impl Sim {
    pub(super) fn start(&mut self, b: BrokerId) {
        let seed = self.rng.next();
        let broker = self.brokers.get(&b).expect("broker");
        let clock = Arc::new(broker.clock.clone());
        let mut config = NodeConfig::new(b);
        config.jitter_seed = seed;
        config.max_size_per_msg_bytes = 32 * 1024;
        config.max_inflight_msgs = 8;
        if self.config.hibernate {
            config.quiesce_after_ticks = Some(3 + (seed % 8) as u32);
        }
        let mut node = Node::new(config, clock);
        // As the broker does when its peers knew an earlier life of its
        // data directory.
        node.set_rejoining(self.rejoining.contains(&b));
        let queued_readies_max = 1 + self.rng.below(QUEUED_READIES_MAX) as usize;
        if self.config.controller {
            // As the broker starts: the controller's replica first, its
            // committed entries replayed over the metadata every broker
            // begins with, then the replicas that metadata assigns here.
            let voters = self.members[&GroupId::CONTROLLER].clone();
            let log = self.open_group(&mut node, b, GroupId::CONTROLLER, voters);
            let bootstrap: BTreeMap<GroupId, Vec<BrokerId>> = (1..=self.config.groups)
                .map(|g| {
                    let n = self.config.brokers;
                    let members = (0..self.config.replication_factor)
                        .map(|k| BrokerId((g + k) % n + 1))
                        .collect();
                    (GroupId(g), members)
                })
                .collect();
            let broker = self.brokers.get_mut(&b).expect("broker");
            broker.logs = BTreeMap::from([(GroupId::CONTROLLER, log)]);
            broker.image = bootstrap;
            broker.applied = RaftIndex(0);
            let commit = node
                .status(GroupId::CONTROLLER)
                .expect("the controller just opened")
                .commit;
            self.apply_metadata(b, &mut node, commit);
            self.reconcile(b, &mut node);
        } else {
            let mut logs = BTreeMap::new();
            let groups: Vec<(GroupId, Vec<BrokerId>)> = self
                .members
                .iter()
                .filter(|(_, m)| m.contains(&b))
                .map(|(g, m)| (*g, m.clone()))
                .collect();
            for (g, members) in groups {
                let log = self.open_group(&mut node, b, g, members);
                logs.insert(g, log);
            }
            self.brokers.get_mut(&b).expect("broker").logs = logs;
        }
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.node = Some(node);
        broker.driver = Driver::new(queued_readies_max);
    }

    /// Opens broker `b`'s replica of group `g` from its files.
    pub(super) fn open_group(
        &mut self,
        node: &mut Node,
        b: BrokerId,
        g: GroupId,
        members: Vec<BrokerId>,
    ) -> ReplicaLogReader {
        let dir = self.dir(b, g);
        let store = self.stores.entry((b, g)).or_default().clone();
        let state = store.load(|| ReplicaState::initial(Membership::voters(members)));
        let log = node
            .add_group(ReplicaSpec {
                group: g,
                dir: &dir,
                // The controller's log keeps everything: a broker replays it
                // from the start.
                log_config: log_config(self.config.retention && g != GroupId::CONTROLLER),
                fsync: self.config.fsync,
                store: Box::new(store),
                state,
            })
            .expect("replica opens");
        if !self.config.fsync {
            // What the open synced is all an fsync=false replica has on
            // disk until it opens again.
            copy_dir(&dir, &self.disk_image(b, g));
        }
        log
    }

    /// Broker `b` closes its replica of a group drawn at random and opens
    /// it again, between rounds.
    pub(super) fn reopen_some_group(&mut self, b: BrokerId) {
        let groups: Vec<GroupId> = self.brokers[&b].logs.keys().copied().collect();
        if groups.is_empty() {
            return;
        }
        let g = groups[self.rng.below(groups.len() as u64) as usize];
        let broker = self.brokers.get_mut(&b).expect("broker");
        if broker.closed.contains(&g) {
            return;
        }
        let Some(node) = broker.node.as_mut() else {
            return;
        };
        node.remove_group(g).expect("the group is open");
        self.reopen(b, g);
    }

    /// Brokers in a controlled shutdown that lead nothing any more, or
    /// whose deadline passed, stop as the broker does: a last round, the
    /// sync rounds out and queued run, every log flushed. Nothing is
    /// forgotten: the process exits, the page cache keeps what it wrote.
    pub(super) fn finish_stops(&mut self) {
        for b in self.alive() {
            let br = &self.brokers[&b];
            let Some(deadline) = br.stopping else {
                continue;
            };
            let node = br.node.as_ref().expect("alive");
            if node.leads_with_peers() && self.step < deadline {
                continue;
            }
            self.drive(b, false, false, |driver, io| {
                driver.round(io);
            });
            loop {
                let broker = self.brokers.get_mut(&b).expect("broker");
                let Some((_, syncs)) = broker.syncing.take() else {
                    break;
                };
                let synced = syncs.run();
                drop(synced);
                self.drive(b, false, false, |driver, io| {
                    driver.synced_while_stopping(io)
                });
            }
            let groups: Vec<GroupId> = self.brokers[&b].logs.keys().copied().collect();
            for g in groups {
                self.brokers[&b].logs[&g]
                    .flush()
                    .expect("flush at shutdown");
                if !self.config.fsync {
                    // Everything is on disk now.
                    let (dir, image) = (self.dir(b, g), self.disk_image(b, g));
                    std::fs::remove_dir_all(&image).expect("old disk image");
                    copy_dir(&dir, &image);
                }
            }
            self.brokers.get_mut(&b).expect("broker").went_down();
            self.pending.retain(|p| p.broker != b);
            self.clean_stops += 1;
            self.trace = mix(self.trace, 0x5709 ^ b.get());
        }
    }

    /// Opens broker `b`'s replica of `g` again, closed since.
    pub(super) fn reopen(&mut self, b: BrokerId, g: GroupId) {
        // As broker `b` knows them: its metadata may lag the others'.
        let members = self.brokers[&b]
            .image
            .get(&g)
            .or_else(|| self.members.get(&g))
            .cloned()
            .expect("a group the broker knows");
        let broker = self.brokers.get_mut(&b).expect("broker");
        let Some(mut node) = broker.node.take() else {
            return;
        };
        // The old log's reader holds its directory's lock.
        broker.logs.remove(&g);
        let log = self.open_group(&mut node, b, g, members);
        let broker = self.brokers.get_mut(&b).expect("broker");
        broker.logs.insert(g, log);
        broker.node = Some(node);
        self.reopens += 1;
        self.trace = mix(self.trace, 0x0E ^ (g.get() << 8) ^ b.get());
    }

    /// Opens again the groups closed in the middle of the rounds.
    pub(super) fn reopen_closed(&mut self) {
        for b in self.alive() {
            let closed = std::mem::take(&mut self.brokers.get_mut(&b).expect("broker").closed);
            for g in closed {
                // A group the metadata deleted meanwhile stays closed, and
                // its replica goes.
                let broker = self.brokers.get_mut(&b).expect("broker");
                if self.config.controller
                    && g != GroupId::CONTROLLER
                    && !broker.image.contains_key(&g)
                {
                    broker.logs.remove(&g);
                    self.stores.remove(&(b, g));
                    std::fs::remove_dir_all(self.dir(b, g)).expect("remove a deleted replica");
                    continue;
                }
                self.reopen(b, g);
            }
        }
    }

    /// A power cut: every byte not synced is forgotten (with fsync=false,
    /// sometimes a crash of the process alone).
    pub(super) fn crash(&mut self, b: BrokerId) {
        self.crash_losing(b, &[]);
    }

    /// A power cut, as [`Sim::crash`], in which the groups of `installed`
    /// had just installed a snapshot: the new state is synced, the
    /// segment their log was reset to is not in a synced directory yet, and
    /// half the time its entry never reached the disk.
    pub(super) fn crash_losing(&mut self, b: BrokerId, installed: &[GroupId]) {
        let broker = self.brokers.get_mut(&b).expect("broker");
        let Some(node) = broker.node.take() else {
            return;
        };
        let durable: Vec<(GroupId, rill_storage::LogPosition)> = broker
            .logs
            .iter()
            .map(|(g, log)| (*g, log.durable()))
            .collect();
        // Retention's windows: segments taken while the new log start's
        // state sync is out, or synced and not yet unlinked.
        if !broker.retention_syncing.is_empty() {
            self.crashes_before_retention_sync += 1;
        }
        if !broker.expired.is_empty() {
            self.crashes_before_unlink += 1;
        }
        self.brokers.get_mut(&b).expect("broker").went_down();
        drop(node);
        // With fsync=false, a third of the crashes are of the process alone
        // (the page cache keeps every write): the next open syncs what the
        // replica wrote, tail and truncations included, for a later power
        // cut to find.
        let process_only = !self.config.fsync && self.rng.chance(333);
        for (g, position) in durable {
            if process_only {
                self.stores.get(&(b, g)).expect("store").crash(true);
                continue;
            }
            let keep = if self.rng.chance(300) {
                self.rng.below(300)
            } else {
                0
            };
            if !self.config.fsync && self.rng.chance(500) {
                // Nothing written since the open reached the disk: a
                // segment sealed by a truncation since then still holds
                // the entries cut from it, and the segment that replaced
                // them is gone (its directory entry was never synced).
                let dir = self.dir(b, g);
                std::fs::remove_dir_all(&dir).expect("forget the directory");
                copy_dir(&self.disk_image(b, g), &dir);
            } else {
                rill_storage::fault::forget_unsynced(&self.dir(b, g), position, keep)
                    .expect("forget unsynced");
                if installed.contains(&g) && self.rng.chance(500) {
                    let gone = rill_storage::fault::forget_new_segments(&self.dir(b, g), position)
                        .expect("forget new segments");
                    self.segments_lost += gone as u64;
                }
            }
            let keep_state = self.rng.chance(500);
            self.stores.get(&(b, g)).expect("store").crash(keep_state);
        }
        // Sometimes the disk goes too: the broker comes back with nothing,
        // as a new incarnation (one such broker at a time: Raft keeps what
        // a majority holds).
        if self.disk_losses < self.config.disk_losses
            && self.rejoining.is_empty()
            && self.rng.chance(300)
        {
            let groups: Vec<GroupId> = self
                .stores
                .keys()
                .filter(|(x, _)| *x == b)
                .map(|(_, g)| *g)
                .collect();
            for g in groups {
                std::fs::remove_dir_all(self.dir(b, g)).expect("wipe the replica");
                self.stores.insert((b, g), MemoryStateStore::default());
            }
            self.rejoining.insert(b);
            self.disk_losses += 1;
            self.trace = mix(self.trace, 0xD15C ^ b.get());
        }
        self.pending.retain(|p| p.broker != b);
        self.crashes += 1;
        self.trace = mix(self.trace, 0xC0 ^ b.get());
    }
}
