//! `rill cluster balance`, `remove-broker` and `add-broker`: the
//! controller plans partition moves and starts a bounded number at a
//! time; this asks again as each round of moves ends, until nothing is
//! left to move, so the command returns once the cluster has its new
//! shape (or its timeout passes: the moves started carry on).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rill_client::protocol::messages::BrokerAction;
use rill_client::{Admin, Cluster};

/// How often a running move's end is looked for.
const MOVE_POLL: Duration = Duration::from_millis(200);

/// Carries out `action` on `broker_id` (0 for a balance; `peer_addr` for
/// a broker new to the cluster that `Add` joins, empty otherwise) within
/// `timeout_ms`: every move the plan holds, round by round.
pub(crate) async fn change_brokers(
    cluster: Arc<Cluster>,
    action: BrokerAction,
    broker_id: u32,
    peer_addr: &str,
    timeout_ms: u64,
) -> anyhow::Result<()> {
    let admin = Admin::new(cluster);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut moved = 0usize;
    loop {
        let answer = admin.change_brokers(action, broker_id, peer_addr).await?;
        if answer.moves.is_empty() {
            if !answer.stuck.is_empty() {
                bail!(
                    "partitions {} cannot leave broker {broker_id}: every other broker holds one of their replicas already (add a broker, or lower their replication)",
                    answer.stuck.join(", ")
                );
            }
            break;
        }
        for m in &answer.moves {
            eprintln!(
                "moving partition {}/{} to brokers {:?}",
                m.topic, m.partition, m.replicas
            );
        }
        for m in &answer.moves {
            let left = deadline.saturating_duration_since(Instant::now());
            let done = admin
                .await_replicas(&m.topic, m.partition, &m.replicas, MOVE_POLL, left)
                .await?;
            if !done {
                bail!(
                    "partition {}/{} is still moving after {timeout_ms} ms: the moves started carry on; run the command again to wait for them and start the rest",
                    m.topic,
                    m.partition
                );
            }
            moved += 1;
        }
    }
    match action {
        BrokerAction::Balance => eprintln!("balanced: {moved} partition(s) moved"),
        BrokerAction::Remove => eprintln!(
            "broker {broker_id} holds no replicas now ({moved} partition(s) moved away): it may be stopped"
        ),
        BrokerAction::Add => eprintln!(
            "broker {broker_id} hosts replicas ({moved} partition(s) moved onto the brokers)"
        ),
    }
    Ok(())
}
