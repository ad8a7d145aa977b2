//! Compressed batches against a real broker: `rill produce --compression`
//! with each codec reads back identical through `rill consume`; a
//! decompression bomb is refused and the broker keeps serving; a topic's
//! `compression.type` recompresses batches with another codec, and a zstd
//! topic of repetitive text takes several times less disk than a plain one.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use bytes::Bytes;
use common::*;
use rill_client::protocol::ErrorCode;
use rill_storage::batch::{Compression, HEADER_BYTES};
use rill_storage::{BatchBuilder, Batches, NewRecord};

fn rill(broker: &BrokerProcess, args: &[&str], stdin: &str) -> Output {
    run_rill(&broker.addr.to_string(), args, stdin)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A batch of `values` compressed with `codec` (when that makes it smaller).
fn compressed_batch(values: &[String], codec: Compression) -> Bytes {
    let mut b = BatchBuilder::new(1 << 20);
    b.compression(codec);
    for v in values {
        assert!(b.push(&NewRecord::value(v.as_bytes(), now_ms())).unwrap());
    }
    Bytes::from(b.finish().unwrap())
}

/// The codec of every batch stored in partition 0 of `topic`.
fn stored_codecs(client: &mut Client, topic: &str) -> BTreeSet<&'static str> {
    let f = client.fetch(topic, 0, 0, 0);
    assert!(f.error.is_ok(), "{:?}", f.error);
    let mut codecs = BTreeSet::new();
    for chunk in &f.records {
        for b in Batches::new(chunk.clone(), usize::MAX) {
            codecs.insert(b.unwrap().header().compression().unwrap().name());
        }
    }
    codecs
}

/// The replica directories (`<topic id>-<partition>`) in `data_dir`.
fn replica_dirs(data_dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.file_name().unwrap() != "controller")
        .collect()
}

/// Creates a one-partition topic with `configs`; returns its replica's
/// directory.
fn create(client: &mut Client, data_dir: &Path, name: &str, configs: &[(&str, &str)]) -> PathBuf {
    let before = replica_dirs(data_dir);
    let r = client.create_topic(name, 1, configs);
    assert!(r.error.is_ok(), "{name}: {:?}", r.error);
    let mut new: Vec<_> = replica_dirs(data_dir)
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "one new replica directory for {name}");
    new.pop().unwrap()
}

/// Bytes of the files in `dir`, summed.
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn each_codec_through_the_cli_reads_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    let input: String = (0..400)
        .map(|i| format!("line {i} of a compressed topic, line {i}\n"))
        .collect();
    for codec in Compression::ALL {
        let topic = format!("cli-{codec}");
        let o = rill(
            &broker,
            &["topic", "create", &topic, "--partitions", "1"],
            "",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let o = rill(
            &broker,
            &["produce", &topic, "--compression", codec.name()],
            &input,
        );
        assert!(o.status.success(), "{codec}: {}", stderr(&o));
        assert_eq!(
            stored_codecs(&mut client, &topic),
            BTreeSet::from([codec.name()]),
            "the batches are stored as the producer compressed them"
        );
        let o = rill(&broker, &["consume", &topic, "--timeout-ms", "1000"], "");
        assert!(o.status.success(), "{codec}: {}", stderr(&o));
        assert_eq!(String::from_utf8(o.stdout).unwrap(), input, "{codec}");
    }
    let o = rill(
        &broker,
        &["produce", "cli-none", "--compression", "gzip"],
        "",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("gzip"), "{}", stderr(&o));
}

#[test]
fn a_decompression_bomb_is_refused_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    create(&mut client, dir.path(), "bombs", &[]);
    let zeros = vec![0u8; (1 << 20) + (1 << 19)];
    for codec in [Compression::Lz4, Compression::Zstd] {
        // 1.5 MiB of records in a batch of a few KiB: past the topic's
        // 1 MiB max.message.bytes once decompressed.
        let mut b = BatchBuilder::new(2 << 20);
        b.compression(codec);
        assert!(b.push(&NewRecord::value(&zeros, now_ms())).unwrap());
        let bomb = b.finish().unwrap();
        assert!(bomb.len() < 16 << 10, "{codec}: {} bytes", bomb.len());
        let r = client.produce("bombs", 0, -1, Bytes::from(bomb.clone()));
        assert_eq!(r.error, ErrorCode::RecordTooLarge, "{codec}");

        // The same block declaring a small size expands past it while
        // decoding: refused as invalid, not retriable.
        let mut lying = bomb.clone();
        lying[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&1000u32.to_le_bytes());
        let crc = rill_storage::batch::compute_crc(&lying);
        lying[28..32].copy_from_slice(&crc.to_le_bytes());
        let r = client.produce("bombs", 0, -1, Bytes::from(lying));
        assert_eq!(r.error, ErrorCode::InvalidRecord, "{codec}");
    }
    // Nothing was stored, and the broker goes on serving.
    let good = values(0..10);
    let r = client.produce("bombs", 0, -1, compressed_batch(&good, Compression::Zstd));
    assert!(r.error.is_ok(), "{:?}", r.error);
    assert_eq!(r.base_offset, 0);
    let got: Vec<String> = read_all(&mut client, "bombs", 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(got, good);
}

#[test]
fn a_topic_codec_recompresses_batches_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    let vals: Vec<String> = (0..200)
        .map(|i| format!("recompressed value {i} recompressed"))
        .collect();
    for (forced, sent) in [
        (Compression::Lz4, Compression::Zstd),
        (Compression::Zstd, Compression::None),
        (Compression::None, Compression::Lz4),
        (Compression::Zstd, Compression::Zstd),
    ] {
        let topic = format!("forced-{forced}-sent-{sent}");
        create(
            &mut client,
            dir.path(),
            &topic,
            &[("compression.type", forced.name())],
        );
        for chunk in vals.chunks(50) {
            let r = client.produce(&topic, 0, -1, compressed_batch(chunk, sent));
            assert!(r.error.is_ok(), "{topic}: {:?}", r.error);
        }
        assert_eq!(
            stored_codecs(&mut client, &topic),
            BTreeSet::from([forced.name()]),
            "{topic}"
        );
        let got: Vec<String> = read_all(&mut client, &topic, 0)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(got, vals, "{topic}");
    }
    let r = client.create_topic("bad", 1, &[("compression.type", "gzip")]);
    assert_eq!(r.error, ErrorCode::InvalidConfig);
}

#[test]
fn a_zstd_topic_of_repetitive_text_takes_several_times_less_disk() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    let plain = create(
        &mut client,
        dir.path(),
        "plain",
        &[("compression.type", "none")],
    );
    let squeezed = create(
        &mut client,
        dir.path(),
        "squeezed",
        &[("compression.type", "zstd")],
    );
    // About 8 MiB of log lines, sent uncompressed to both: the zstd topic
    // compresses them itself.
    let lines: Vec<String> = (0..80_000)
        .map(|i| {
            format!(
                "2026-12-05T01:00:{:02}Z INFO request served path=/api/orders/{} status=200",
                i % 60,
                i % 1000
            )
        })
        .collect();
    for chunk in lines.chunks(5_000) {
        let batch = compressed_batch(chunk, Compression::None);
        for topic in ["plain", "squeezed"] {
            let r = client.produce(topic, 0, -1, batch.clone());
            assert!(r.error.is_ok(), "{topic}: {:?}", r.error);
        }
    }
    let (plain_bytes, squeezed_bytes) = (dir_bytes(&plain), dir_bytes(&squeezed));
    eprintln!("plain {plain_bytes} bytes, zstd {squeezed_bytes} bytes");
    assert!(
        plain_bytes >= 3 * squeezed_bytes,
        "plain {plain_bytes} bytes, zstd {squeezed_bytes} bytes"
    );
    let got = read_all(&mut client, "squeezed", 0);
    assert_eq!(got.len(), lines.len());
    assert!(got.iter().zip(&lines).all(|((_, a), b)| a == b));
}

/// The codec of the last batch stored in partition 0 of `topic`.
fn last_stored_codec(client: &mut Client, topic: &str) -> Option<&'static str> {
    let f = client.fetch(topic, 0, 0, 0);
    assert!(f.error.is_ok(), "{:?}", f.error);
    let mut last = None;
    for chunk in &f.records {
        for b in Batches::new(chunk.clone(), usize::MAX) {
            last = Some(b.unwrap().header().compression().unwrap().name());
        }
    }
    last
}

#[test]
fn compression_type_changes_live_and_describe_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path());
    let mut client = broker.connect();
    create(&mut client, dir.path(), "live", &[]);
    let describe = |broker: &BrokerProcess| {
        let o = rill(
            broker,
            &["topic", "describe", "live", "--format", "json"],
            "",
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let c = d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == "compression.type")
            .unwrap()
            .clone();
        (
            c["value"].as_str().unwrap().to_string(),
            c["source"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(describe(&broker), ("producer".into(), "default".into()));
    let vals = values(0..100);
    let r = client.produce("live", 0, -1, compressed_batch(&vals, Compression::Zstd));
    assert!(r.error.is_ok(), "{:?}", r.error);
    assert_eq!(last_stored_codec(&mut client, "live"), Some("zstd"));

    let o = rill(
        &broker,
        &["topic", "alter", "live", "--config", "compression.type=lz4"],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(describe(&broker), ("lz4".into(), "set".into()));
    // The serving replica recompresses from then on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = client.produce("live", 0, -1, compressed_batch(&vals, Compression::Zstd));
        assert!(r.error.is_ok(), "{:?}", r.error);
        if last_stored_codec(&mut client, "live") == Some("lz4") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new codec never took effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = rill(
        &broker,
        &[
            "topic",
            "alter",
            "live",
            "--config",
            "compression.type=brotli",
        ],
        "",
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("compression.type is producer, none, lz4 or zstd"),
        "{}",
        stderr(&o)
    );
    // Every batch reads back, whatever it was stored as.
    let got = read_all(&mut client, "live", 0);
    assert!(got.len() >= 200);
    assert!(got.iter().all(|(o, v)| *v == vals[*o as usize % 100]));
}
