//! SIGKILL in the middle of a write loop: a child process appends and
//! flushes as fast as it can and reports every flush; the test kills it at
//! an arbitrary moment, reopens the log, and checks that every batch flushed
//! before the kill is there, intact, and that appends continue at the right
//! offset. Repeated over several kills of the same log.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{batch_at, check_all, small_config};
use rill_storage::{Log, Offset, Term};

const CHILD_DIR_ENV: &str = "RILL_STORAGE_KILL_TEST_DIR";
const VALUE_BYTES: usize = 100;
/// The child stops by itself after this many appends if nobody kills it.
const CHILD_MAX_APPENDS: u64 = 2_000_000;
const KILLS: u64 = 4;

/// The child side: append batches of 1..=7 records forever, flushing every
/// few appends and printing `flushed <next_offset>` after each flush.
#[test]
#[ignore = "the writer process of sigkill_during_writes_loses_nothing_flushed"]
fn child_writer_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let mut log = Log::open(&dir, small_config()).unwrap();
    println!("opened {}", log.next_offset());
    for i in 0..CHILD_MAX_APPENDS {
        let next = log.next_offset().get();
        log.append(
            &batch_at(next, 1 + next % 7, VALUE_BYTES, next as i64),
            Term(1),
        )
        .unwrap();
        if i % 5 == 4 {
            let durable = log.flush().unwrap();
            println!("flushed {}", durable.offset);
        }
    }
}

#[test]
fn sigkill_during_writes_loses_nothing_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_flushed = 0;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_writer_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it run for a varying number of flushes, then kill it mid-loop.
        let wait_for = 50 + round * 37;
        let mut flushes = 0;
        while flushes < wait_for {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the writer reports progress");
            if let Some(off) = line.strip_prefix("opened ") {
                let opened: u64 = off.parse().unwrap();
                assert!(
                    opened >= last_flushed,
                    "reopened at {opened}, before the flushed {last_flushed}"
                );
            }
            if let Some(off) = line.strip_prefix("flushed ") {
                last_flushed = off.parse().unwrap();
                flushes += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Flush reports that raced with the kill still count: they were acknowledged.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(off) = line.strip_prefix("flushed ") {
                last_flushed = off.parse().unwrap();
            }
        }

        let mut log = Log::open(dir.path(), small_config()).unwrap();
        assert!(
            log.next_offset().get() >= last_flushed,
            "round {round}: log ends at {} but {last_flushed} was flushed",
            log.next_offset()
        );
        check_all(&log, VALUE_BYTES);
        let next = log.next_offset();
        let a = log
            .append(&batch_at(next.get(), 3, VALUE_BYTES, 0), Term(1))
            .unwrap();
        assert_eq!(a.base_offset, next);
        assert_eq!(log.next_offset(), Offset(next.get() + 3));
        log.flush().unwrap();
        last_flushed = log.next_offset().get();
    }
}
