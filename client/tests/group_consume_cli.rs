//! `rill consume --group` against a scripted broker playing a small
//! coordinator (`common/group_broker.rs`): runs one after another read on
//! from what the last one printed, the group's commits are exactly what
//! was printed (even when `--max-messages` stops inside a poll's records),
//! SIGINT and SIGTERM commit and leave, and `--offset`/`--partition` forms
//! a group cannot honour are refused.

#[path = "common/answers.rs"]
mod answers;
#[path = "common/group_broker.rs"]
mod group_broker;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use group_broker::{Scripted, TOPIC};
use tokio::time::Instant;

/// Runs `rill` with `args` against `broker` to its end (at most 60 s).
async fn rill(broker: &Scripted, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rill"));
    command
        .args(args)
        .env("RILL_BOOTSTRAP", &broker.addr)
        .stdin(Stdio::null());
    let run = tokio::task::spawn_blocking(move || command.output().expect("rill runs"));
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("rill ends within 60 s")
        .expect("joined")
}

fn lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The offset after the last record printed per partition, from lines
/// `p/offset`.
fn next_offsets(printed: &[String]) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for l in printed {
        let (p, o) = l.split_once('/').expect("p/offset");
        let (p, o): (u32, u64) = (p.parse().expect("p"), o.parse().expect("offset"));
        let next = out.entry(p).or_insert(0);
        *next = (*next).max(o + 1);
    }
    out
}

fn committed(broker: &Scripted) -> BTreeMap<u32, u64> {
    broker
        .state()
        .commits
        .iter()
        .map(|(p, c)| (*p, c.offset))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_a_group_read_on_from_what_the_last_printed_and_commit_exactly_that() {
    let broker = Scripted::start(3).await;
    broker.append(5);
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..2 {
        let o = rill(
            &broker,
            &["consume", TOPIC, "--group", "g", "--max-messages", "4"],
        )
        .await;
        assert!(o.status.success(), "{}", stderr(&o));
        let printed = lines(&o);
        assert_eq!(printed.len(), 4, "{printed:?}");
        seen.extend(printed);
        // The group holds exactly what was printed of each partition
        // printed from; no member is left.
        let commits = committed(&broker);
        for (p, next) in next_offsets(&seen) {
            assert_eq!(commits.get(&p), Some(&next), "partition {p}: {commits:?}");
        }
        assert!(broker.state().members.is_empty());
    }
    let o = rill(
        &broker,
        &["consume", TOPIC, "--group", "g", "--timeout-ms", "1000"],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    seen.extend(lines(&o));
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "a record printed twice: {seen:?}"
    );
    assert_eq!(seen.len(), 15);
    assert_eq!(committed(&broker), [(0, 5), (1, 5), (2, 5)].into());
    // All read: nothing more, and a successful exit.
    let o = rill(
        &broker,
        &["consume", TOPIC, "--group", "g", "--timeout-ms", "1000"],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(lines(&o).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_a_group_member_that_commits_what_it_printed_and_leaves() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let broker = Scripted::start(2).await;
        broker.append(3);
        let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(["consume", TOPIC, "--group", "g"])
            .env("RILL_BOOTSTRAP", &broker.addr)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rill runs");
        let stdout = child.stdout.take().expect("stdout");
        // Every record printed, then the signal.
        let read = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut printed = Vec::new();
            while printed.len() < 6 {
                let mut line = String::new();
                if reader.read_line(&mut line).expect("a line") == 0 {
                    break;
                }
                printed.push(line.trim_end().to_string());
            }
            (printed, reader)
        });
        let (printed, _reader) = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("six records within 30 s")
            .expect("joined");
        assert_eq!(printed.len(), 6);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "rill ends after the signal");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "{status}");
        assert_eq!(committed(&broker), [(0, 3), (1, 3)].into());
        let s = broker.state();
        assert_eq!(s.leaves.len(), 1, "left the group");
        assert!(s.members.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_a_group_cannot_honour_and_a_chosen_partition_are_refused_with_a_group() {
    let broker = Scripted::start(1).await;
    let o = rill(
        &broker,
        &["consume", TOPIC, "--group", "g", "--offset", "5"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("--offset with --group is earliest or latest"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    let o = rill(
        &broker,
        &["consume", TOPIC, "--group", "g", "--partition", "0"],
    )
    .await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--partition"), "{}", stderr(&o));
    // Nothing joined.
    assert_eq!(broker.state().joined, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_applies_only_where_the_group_has_no_commit() {
    let broker = Scripted::start(2).await;
    broker.append(4);
    broker.state().commits.insert(
        0,
        rill_client::CommitOffset {
            offset: 1,
            leader_epoch: 0,
        },
    );
    let o = rill(
        &broker,
        &[
            "consume",
            TOPIC,
            "--group",
            "g",
            "--offset",
            "latest",
            "--timeout-ms",
            "1000",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    // Partition 0 from its commit; partition 1 (no commit) from its end.
    assert_eq!(lines(&o), ["0/1", "0/2", "0/3"]);
}
