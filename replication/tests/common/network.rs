//! The simulated network: messages leave a broker as bytes (encoded as a
//! socket would copy them), are dropped, duplicated, delayed and cut by
//! the seeded faults, and are delivered in order of their due step.

use super::*;

impl Sim {
    pub(super) fn send(&mut self, from: BrokerId, out: Vec<Outgoing>) {
        for mut o in out {
            if o.message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                self.snapshots_sent += 1;
            }
            let f = &self.config.faults;
            let (drop, dup, delay_max) = (f.drop, f.duplicate, f.delay_steps_max);
            if self.cut.contains(&(from, o.to)) || self.rng.chance(drop) {
                continue;
            }
            // Encoded as it leaves, as a socket copies the bytes when they
            // are written: entry data may borrow the sender's mapped log,
            // whose unsynced bytes a crash before delivery would zero.
            o.message = through_the_wire(from, o.group, o.message);
            let copies = if self.rng.chance(dup) { 2 } else { 1 };
            for _ in 0..copies {
                self.msg_seq += 1;
                let delay = 1 + self.rng.below(delay_max);
                self.network.push(InFlight {
                    deliver_at: self.step + delay,
                    seq: self.msg_seq,
                    from,
                    out: o.clone(),
                });
            }
        }
    }

    pub(super) fn deliver(&mut self) {
        let now = self.step;
        let mut due: Vec<InFlight> = Vec::new();
        let mut later = Vec::new();
        for m in self.network.drain(..) {
            if m.deliver_at <= now {
                due.push(m);
            } else {
                later.push(m);
            }
        }
        self.network = later;
        due.sort_by_key(|m| (m.deliver_at, m.seq));
        for m in due {
            if self.cut.contains(&(m.from, m.out.to)) {
                continue;
            }
            let Some(node) = self
                .brokers
                .get_mut(&m.out.to)
                .and_then(|br| br.node.as_mut())
            else {
                continue;
            };
            self.trace = mix(self.trace, m.seq);
            // A message for a group not here, or from a stranger, is
            // refused, as the broker would refuse it.
            let _ = node.step(m.out.group, m.out.message);
        }
    }
}

/// `message` as the receiving broker sees it: encoded in a peer frame by
/// `from` and decoded again, so every message Raft sends in a simulation
/// also exercises the peer codec (heartbeats in short form included).
pub(super) fn through_the_wire(
    from: BrokerId,
    group: GroupId,
    message: raft::eraftpb::Message,
) -> raft::eraftpb::Message {
    let mut frame = bytes::BytesMut::new();
    rill_replication::wire::encode_frame(from, &[(group, message)], &mut frame);
    let decoded = rill_replication::wire::decode_frame(
        frame.freeze(),
        &rill_replication::wire::WireLimits::default(),
    )
    .expect("every message Raft sends decodes");
    assert_eq!(decoded.from, from);
    let mut messages = decoded.messages;
    assert_eq!(messages.len(), 1);
    let (g, m) = messages.pop().expect("one pair");
    assert_eq!(g, group);
    m
}
