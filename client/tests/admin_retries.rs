//! How the admin client treats an answer to a retried request: a delete
//! whose first try may have gone through (the controller answered with a
//! retriable error) succeeds when the retry finds the topic gone, while a
//! delete of a topic that was never there fails at once.
//!
//! A scripted broker on 127.0.0.1 answers each `DeleteTopics` with the next
//! error code of its script.

use bytes::BytesMut;
use rill_client::protocol::messages::{TopicResult, TopicResults};
use rill_client::protocol::{
    ErrorCode, Request, Response, decode_request, encode_response, take_frame,
};
use rill_client::{Admin, ClientError, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves one connection, answering the `DeleteTopics` requests with
/// `script`'s codes in order; returns how many it answered.
async fn scripted_broker(script: Vec<ErrorCode>) -> (String, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = BytesMut::new();
        let mut answered = 0;
        for code in script {
            let payload = loop {
                if let Some(p) = take_frame(&mut buf, 1 << 20).expect("frame") {
                    break p;
                }
                if socket.read_buf(&mut buf).await.expect("read") == 0 {
                    return answered;
                }
            };
            let (header, request) = decode_request(payload).expect("request");
            let Request::DeleteTopics(d) = request else {
                panic!("only deletes are scripted");
            };
            let response = Response::DeleteTopics(TopicResults {
                results: vec![TopicResult {
                    name: d.names[0].clone(),
                    error: code,
                    message: String::new(),
                }],
            });
            for part in encode_response(header.correlation_id, &response) {
                socket.write_all(&part).await.expect("write");
            }
            answered += 1;
        }
        answered
    });
    (addr, task)
}

fn admin(addr: &str) -> Admin {
    Admin::new(Cluster::new(addr, "admin-test").expect("cluster"))
}

#[tokio::test]
async fn a_retried_delete_that_finds_the_topic_gone_succeeds() {
    let (addr, broker) = scripted_broker(vec![
        ErrorCode::NotController,
        ErrorCode::UnknownTopicOrPartition,
    ])
    .await;
    admin(&addr)
        .delete_topic("events")
        .await
        .expect("the first try went through");
    assert_eq!(broker.await.expect("broker"), 2);
}

#[tokio::test]
async fn deleting_a_topic_that_was_never_there_fails_at_once() {
    let (addr, broker) = scripted_broker(vec![ErrorCode::UnknownTopicOrPartition]).await;
    let err = admin(&addr)
        .delete_topic("events")
        .await
        .expect_err("no such topic");
    assert!(matches!(
        err,
        ClientError::Broker {
            code: ErrorCode::UnknownTopicOrPartition,
            ..
        }
    ));
    assert_eq!(broker.await.expect("broker"), 1);
}
