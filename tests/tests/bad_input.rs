//! Bad input from a device: malformed bytes, a truncated body, an oversized body, an unknown
//! protocol version. Each gets a 4xx with a message a person can act on, changes nothing, and
//! the server keeps serving.

use protocol::codec::{packed, packed_push};
use protocol::sync::{PullRequest, PushRequest, MAX_PUSH_BYTES};

use crate::util::{household, Device, TestServer};

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post(server: &TestServer, token: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    post_as(server, token, path, "application/octet-stream", body).await
}

async fn post_as(
    server: &TestServer,
    token: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let response = http()
        .post(format!("{}{path}", server.url))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("text body"))
}

#[tokio::test]
async fn malformed_truncated_oversized_and_unknown_version_bodies_get_clear_4xx_and_change_nothing()
{
    let server = TestServer::start().await;
    let lan = Device::new(&server);
    lan.save(&household("Lý Văn Phúc", "Thôn Đông"));
    let valid = protocol::codec::encode(&PushRequest {
        device_id: lan.id,
        mutations: lan.store.pending().expect("outbox"),
    });

    let mut garbage = valid.clone();
    for byte in garbage.iter_mut().skip(2).step_by(3) {
        *byte = 0xff;
    }
    let truncated = valid[..valid.len() / 2].to_vec();
    let mut future = valid.clone();
    future[0] = 0x63;
    let oversized = vec![1u8; MAX_PUSH_BYTES + 1];

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("malformed push", "/v1/sync/push", garbage, 400, "malformed"),
        (
            "truncated push",
            "/v1/sync/push",
            truncated,
            400,
            "truncated",
        ),
        (
            "unknown version",
            "/v1/sync/push",
            future,
            400,
            "version 99",
        ),
        ("oversized push", "/v1/sync/push", oversized, 413, ""),
        ("empty pull", "/v1/sync/pull", Vec::new(), 400, "empty"),
        (
            "pull with trailing bytes",
            "/v1/sync/pull",
            {
                let mut bytes = protocol::codec::encode(&PullRequest {
                    device_id: lan.id,
                    cursor: 0,
                    limit: 10,
                    outcomes_from: u64::MAX,
                });
                bytes.extend_from_slice(b"extra");
                bytes
            },
            400,
            "trailing",
        ),
    ];
    for (what, path, body, status, says) in cases {
        let (got, message) = post(&server, &lan.token, path, body).await;
        assert_eq!(got, status, "{what}: {message}");
        assert!(
            message.to_lowercase().contains(says),
            "{what}: '{message}' should say '{says}'"
        );
        assert!(!message.is_empty(), "{what}: a refusal explains itself");
        assert_eq!(
            server.registry().head_seq().expect("head"),
            0,
            "{what} changed nothing"
        );
        assert_eq!(
            server.registry().device_last_seq(lan.id).expect("seq"),
            0,
            "{what}"
        );
    }

    // Still serving: health, and the valid push goes through afterwards.
    let health = http()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
    let report = lan.sync().await;
    assert_eq!(report.applied, 1);
}

#[tokio::test]
async fn an_empty_push_and_a_device_mismatch_inside_the_batch_are_refused() {
    let server = TestServer::start().await;
    let lan = Device::new(&server);
    let empty = protocol::codec::encode(&PushRequest {
        device_id: lan.id,
        mutations: Vec::new(),
    });
    let (status, message) = post(&server, &lan.token, "/v1/sync/push", empty).await;
    assert_eq!(status, 400, "{message}");

    let created = household("Mai Văn Quang", "Thôn Đông");
    lan.save(&created);
    lan.save(&created.clone());
    let mut mutations = lan.store.pending().expect("outbox");
    mutations[1].seq = 7;
    let skipping = protocol::codec::encode(&PushRequest {
        device_id: lan.id,
        mutations,
    });
    let (status, message) = post(&server, &lan.token, "/v1/sync/push", skipping).await;
    assert_eq!(
        status, 400,
        "seqs inside a batch must follow each other: {message}"
    );
    assert_eq!(server.registry().head_seq().expect("head"), 0);
}

#[tokio::test]
async fn packed_pushes_that_are_damaged_or_would_unpack_too_large_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let lan = Device::new(&server);
    lan.save(&household("Đinh Thị Ngọc", "Thôn Đông"));
    let pending = lan.store.pending().expect("outbox");
    let packed_mutation = packed::pack(&protocol::codec::encode(&pending[0]));
    let mut damaged = packed_mutation.clone();
    let middle = damaged.len() / 2;
    damaged[middle..].iter_mut().for_each(|byte| *byte = !*byte);
    // Each frame unpacks to a megabyte of zeros: 20 MiB from a few kilobytes.
    let bomb = packed::pack(&vec![0u8; 1 << 20]);
    let bomb_frames = vec![bomb.as_slice(); 20];

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a plain push sent as packed",
            protocol::codec::encode(&PushRequest {
                device_id: lan.id,
                mutations: pending.clone(),
            }),
            400,
            "trailing bytes",
        ),
        (
            "a damaged mutation",
            packed_push::encode(&lan.id, &[&damaged]),
            400,
            "mutation 1 of the push",
        ),
        (
            "mutations that unpack past the limit",
            packed_push::encode(&lan.id, &bomb_frames),
            413,
            "over the limit",
        ),
    ];
    for (what, body, status, says) in cases {
        let (got, message) = post_as(
            &server,
            &lan.token,
            "/v1/sync/push",
            packed_push::CONTENT_TYPE,
            body,
        )
        .await;
        assert_eq!(got, status, "{what}: {message}");
        assert!(
            message.contains(says),
            "{what}: '{message}' should say '{says}'"
        );
        assert_eq!(
            server.registry().head_seq().expect("head"),
            0,
            "{what} changed nothing"
        );
    }

    // The same mutation, packed as the outbox keeps it, goes through.
    let (status, message) = post_as(
        &server,
        &lan.token,
        "/v1/sync/push",
        packed_push::CONTENT_TYPE,
        packed_push::encode(&lan.id, &[&packed_mutation]),
    )
    .await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(server.registry().head_seq().expect("head"), 1);
    assert_eq!(server.registry().device_last_seq(lan.id).expect("seq"), 1);
}
