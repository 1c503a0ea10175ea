//! Access: accounts and roles, enrolled devices, areas checked on every route and every
//! household, revocation that keeps a device's work for review, the audit log, secrets kept
//! out of logs and responses, the sign-in limit, reassignment, and the request time limit.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use client_core::{SyncError, TransportError};
use protocol::fields::{FieldChange, FieldValue};
use protocol::household::Household;
use protocol::sync::{
    Base, Mutation, Outcome, PullRequest, PullResponse, PushReply, PushRequest, MAX_RESPONSE_BYTES,
};
use serde_json::{json, Value};
use server::auth::{vietnam_time, Actor, AuthConfig, Clock};
use server::scope::{Role, REVOKED_REASON};
use uuid::Uuid;

use crate::util::{household, Device, TestServer, ADMIN, PASSWORD};

/// Every log line of this test process, from the moment the first test here asks for it.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,server=trace,client_core=trace",
            ))
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .try_init()
            .expect("this module installs the only log subscriber of the test binary");
        buffer
    }))
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One HTTP answer.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A request body: JSON, or protocol bytes.
enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> Answer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request = match body {
        Body::None => request,
        Body::Json(value) => request
            .header("content-type", "application/json")
            .body(value.to_string()),
        Body::Bytes(bytes) => request
            .header("content-type", "application/octet-stream")
            .body(bytes),
    };
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("a body").to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

/// A household with a personal ID number on its head: a marker that must never reach anyone
/// outside its village.
fn marked(head: &str, village: &str, personal_id: &str) -> Household {
    let mut record = household(head, village);
    record.members[0].personal_id = Some(personal_id.to_string());
    record
}

/// A crafted edit of `record`'s address, as the next mutation of `device`.
fn edit_mutation(server: &TestServer, device: Uuid, record: &Household, address: &str) -> Mutation {
    let rev = server
        .registry()
        .household(record.id)
        .expect("read")
        .map_or(1, |row| row.rev);
    Mutation {
        seq: server.registry().device_last_seq(device).expect("seq") + 1,
        household_id: record.id,
        base: Base::Rev(rev),
        changes: vec![FieldChange {
            path: "address".into(),
            value: Some(FieldValue::Text(address.into())),
        }],
        made_at_ms: 0,
    }
}

fn push_bytes(device: Uuid, mutations: Vec<Mutation>) -> Vec<u8> {
    protocol::codec::encode(&PushRequest {
        device_id: device,
        mutations,
    })
}

fn pull_bytes(device: Uuid, cursor: u64) -> Vec<u8> {
    protocol::codec::encode(&PullRequest {
        device_id: device,
        cursor,
        limit: 1_000,
        outcomes_from: u64::MAX,
    })
}

fn audit_has(server: &TestServer, event: &str, actor: &str, subject: &str) -> bool {
    let actor_of = |entry: &server::store::AuditEntry| entry.entry.actor == actor;
    server
        .state
        .auth()
        .accounts()
        .audit_after(0, 100_000)
        .expect("audit")
        .iter()
        .any(|entry| {
            entry.entry.event.as_str() == event && actor_of(entry) && entry.entry.subject == subject
        })
}

fn another_commune() -> String {
    protocol::areas::AreaRegistry::embedded()
        .expect("areas")
        .communes()
        .find(|commune| commune.code != "00004")
        .expect("more than one commune")
        .code
        .clone()
}

/// The callers of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    BadToken,
    Revoked,
    /// An enumerator of Thôn Tây, reaching for Thôn Đông.
    OtherVillage,
    /// A supervisor of another commune.
    OtherCommune,
    Administrator,
    /// The enumerator of Thôn Đông (a positive control).
    Owner,
    /// The supervisor of commune 00004 (a positive control).
    Supervisor,
}

const EVERYONE: [Who; 8] = [
    Who::Nobody,
    Who::BadToken,
    Who::Revoked,
    Who::OtherVillage,
    Who::OtherCommune,
    Who::Administrator,
    Who::Owner,
    Who::Supervisor,
];

/// The routes of the matrix, the logout last (it ends the sessions it is sent with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Health,
    Reference,
    Login,
    Enrol,
    Push,
    Pull,
    Household,
    Conflicts,
    ConflictsOfHousehold,
    Rejected,
    Users,
    CreateUser,
    SetPassword,
    ChangeAreas,
    SetRole,
    Devices,
    Revoke,
    Audit,
    Unknown,
    Logout,
}

const ROUTES: [Route; 20] = [
    Route::Health,
    Route::Reference,
    Route::Login,
    Route::Enrol,
    Route::Push,
    Route::Pull,
    Route::Household,
    Route::Conflicts,
    Route::ConflictsOfHousehold,
    Route::Rejected,
    Route::Users,
    Route::CreateUser,
    Route::SetPassword,
    Route::ChangeAreas,
    Route::SetRole,
    Route::Devices,
    Route::Revoke,
    Route::Audit,
    Route::Unknown,
    Route::Logout,
];

/// The exact status each caller gets on each route.
fn expected(route: Route, who: Who) -> u16 {
    use Who::*;
    let signed = |revoked: u16,
                  other_village: u16,
                  other_commune: u16,
                  admin: u16,
                  owner: u16,
                  supervisor: u16| match who {
        Nobody | BadToken => 401,
        Revoked => revoked,
        OtherVillage => other_village,
        OtherCommune => other_commune,
        Administrator => admin,
        Owner => owner,
        Supervisor => supervisor,
    };
    match route {
        Route::Health | Route::Reference => 200,
        // An empty body: refused before any password is checked.
        Route::Login | Route::Enrol => 400,
        Route::Unknown => 404,
        // A revoked device's push is accepted as review items; another village's edit is
        // answered with a rejection; sessions do not sync.
        Route::Push => signed(200, 200, 403, 403, 200, 403),
        Route::Pull => signed(403, 200, 403, 403, 200, 403),
        Route::Household => signed(403, 404, 404, 200, 200, 200),
        Route::Conflicts | Route::ConflictsOfHousehold | Route::Rejected => {
            signed(403, 200, 200, 200, 200, 200)
        }
        Route::Users
        | Route::SetPassword
        | Route::ChangeAreas
        | Route::SetRole
        | Route::Devices
        | Route::Revoke
        | Route::Audit => signed(403, 403, 403, 200, 403, 403),
        Route::CreateUser => signed(403, 403, 403, 201, 403, 403),
        Route::Logout => signed(403, 403, 204, 204, 403, 204),
    }
}

#[tokio::test]
async fn every_route_with_every_caller_answers_the_exact_status_and_leaks_no_household() {
    let server = TestServer::start().await;
    let elsewhere = another_commune();
    server.add_user("lan", Role::Enumerator, &["00004/Thôn Đông"]);
    server.add_user("minh", Role::Enumerator, &["00004/Thôn Tây"]);
    server.add_user("bi.thu.hoi", Role::Enumerator, &["00004/Thôn Đông"]);
    server.add_user("doi.vai", Role::Enumerator, &["00004/Thôn Đông"]);
    server.add_user("giam.sat", Role::Supervisor, &["00004"]);
    server.add_user("giam.sat.khac", Role::Supervisor, &[elsewhere.as_str()]);

    let lan = Device::enrol(&server, "lan");
    let minh = Device::enrol(&server, "minh");
    let revoked = Device::enrol(&server, "bi.thu.hoi");
    let spare = Device::enrol(&server, "doi.vai");
    server
        .state
        .auth()
        .revoke_device(&Actor::command_line(), revoked.id)
        .expect("revoke");

    let in_a = marked("Nguyễn Văn Ánh", "Thôn Đông", "001080000001");
    let in_b = marked("Trần Thị Bích", "Thôn Tây", "001080000002");
    lan.save(&in_a);
    minh.save(&in_b);
    assert_eq!(lan.sync().await.applied, 1);
    assert_eq!(minh.sync().await.applied, 1);

    let admin = server.session(ADMIN);
    let supervisor = server.session("giam.sat");
    let other_commune = server.session("giam.sat.khac");
    let bad = format!("hod_{}", "0".repeat(64));

    let token = |who: Who| -> Option<String> {
        match who {
            Who::Nobody => None,
            Who::BadToken => Some(bad.clone()),
            Who::Revoked => Some(revoked.token.clone()),
            Who::OtherVillage => Some(minh.token.clone()),
            Who::OtherCommune => Some(other_commune.clone()),
            Who::Administrator => Some(admin.clone()),
            Who::Owner => Some(lan.token.clone()),
            Who::Supervisor => Some(supervisor.clone()),
        }
    };
    let device_of = |who: Who| -> Uuid {
        match who {
            Who::Revoked => revoked.id,
            Who::OtherVillage => minh.id,
            Who::Owner | Who::Nobody | Who::BadToken => lan.id,
            _ => Uuid::now_v7(),
        }
    };
    // What each caller must never receive: the markers of households outside its areas.
    let a_markers = ["Nguyễn Văn Ánh", "001080000001"];
    let b_markers = ["Trần Thị Bích", "001080000002"];
    let hidden = |who: Who| -> Vec<&str> {
        match who {
            Who::Administrator | Who::Supervisor => vec![],
            Who::Owner => b_markers.to_vec(),
            Who::OtherVillage => a_markers.to_vec(),
            _ => a_markers.iter().chain(&b_markers).copied().collect(),
        }
    };
    let hidden_ids = |who: Who| -> Vec<Uuid> {
        match who {
            Who::Administrator | Who::Supervisor => vec![],
            Who::Owner => vec![in_b.id],
            Who::OtherVillage => vec![in_a.id],
            _ => vec![in_a.id, in_b.id],
        }
    };

    let mut mismatches = Vec::new();
    let mut unexpected_successes = 0;
    let mut leaks = Vec::new();
    let mut created = 0;
    for route in ROUTES {
        for who in EVERYONE {
            use reqwest::Method;
            let (method, path, body) = match route {
                Route::Health => (Method::GET, "/healthz".to_string(), Body::None),
                Route::Reference => (Method::GET, "/v1/reference".to_string(), Body::None),
                Route::Login => (Method::POST, "/v1/auth/login".into(), Body::Json(json!({}))),
                Route::Enrol => (Method::POST, "/v1/auth/enrol".into(), Body::Json(json!({}))),
                Route::Push => {
                    let device = device_of(who);
                    let mutation = edit_mutation(&server, device, &in_a, &format!("Số 7, {who:?}"));
                    (
                        Method::POST,
                        "/v1/sync/push".into(),
                        Body::Bytes(push_bytes(device, vec![mutation])),
                    )
                }
                Route::Pull => (
                    Method::POST,
                    "/v1/sync/pull".into(),
                    Body::Bytes(pull_bytes(device_of(who), 0)),
                ),
                Route::Household => (
                    Method::GET,
                    format!("/v1/households/{}", in_a.id),
                    Body::None,
                ),
                Route::Conflicts => (Method::GET, "/v1/conflicts".into(), Body::None),
                Route::ConflictsOfHousehold => (
                    Method::GET,
                    format!("/v1/conflicts?household={}", in_a.id),
                    Body::None,
                ),
                Route::Rejected => (Method::GET, "/v1/rejected".into(), Body::None),
                Route::Users => (Method::GET, "/v1/admin/users".into(), Body::None),
                Route::CreateUser => {
                    created += 1;
                    (
                        Method::POST,
                        "/v1/admin/users".into(),
                        Body::Json(json!({
                            "username": format!("moi.{created}"),
                            "password": "một mật khẩu đủ dài",
                            "role": "enumerator",
                            "areas": ["00004/Thôn Đông"],
                        })),
                    )
                }
                Route::SetPassword => (
                    Method::POST,
                    "/v1/admin/users/doi.vai/password".into(),
                    Body::Json(json!({"password": "một mật khẩu mới dài"})),
                ),
                Route::ChangeAreas => (
                    Method::POST,
                    "/v1/admin/users/doi.vai/areas".into(),
                    Body::Json(json!({"assign": ["00004/Thôn Nam"]})),
                ),
                Route::SetRole => (
                    Method::PUT,
                    "/v1/admin/users/doi.vai/role".into(),
                    Body::Json(json!({"role": "enumerator", "areas": ["00004/Thôn Bắc"]})),
                ),
                Route::Devices => (Method::GET, "/v1/admin/devices".into(), Body::None),
                Route::Revoke => (
                    Method::POST,
                    format!("/v1/admin/devices/{}/revoke", spare.id),
                    Body::None,
                ),
                Route::Audit => (Method::GET, "/v1/admin/audit".into(), Body::None),
                Route::Unknown => (Method::GET, "/v1/nothing-here".into(), Body::None),
                Route::Logout => (Method::POST, "/v1/auth/logout".into(), Body::None),
            };
            let answer = call(&server, method, &path, token(who).as_deref(), body).await;
            let want = expected(route, who);
            if answer.status != want {
                mismatches.push(format!(
                    "{route:?} as {who:?}: {} (wanted {want}): {}",
                    answer.status,
                    answer.text()
                ));
            }
            if (200..300).contains(&answer.status) && !(200..300).contains(&want) {
                unexpected_successes += 1;
            }
            // Nothing of a household outside the caller's areas, in any body.
            let text = answer.text();
            for marker in hidden(who) {
                if text.contains(marker) {
                    leaks.push(format!("{route:?} as {who:?} carries {marker}"));
                }
            }
            if route == Route::Pull && answer.status == 200 {
                let page: PullResponse =
                    protocol::codec::pull_page::decode(&answer.body, MAX_RESPONSE_BYTES)
                        .expect("a page");
                for change in &page.changes {
                    if hidden_ids(who).contains(&change.household_id) {
                        leaks.push(format!(
                            "{route:?} as {who:?} pulls {}",
                            change.household_id
                        ));
                    }
                }
            }
            if route == Route::Push && answer.status == 200 {
                let reply: PushReply =
                    protocol::codec::decode(&answer.body, MAX_RESPONSE_BYTES).expect("a reply");
                let PushReply::Accepted { outcomes, .. } = reply else {
                    panic!("{who:?}: a push reply without a gap");
                };
                let applied = matches!(outcomes[0].outcome, Outcome::Applied { .. });
                // Only the owner's edit lands; the others are kept for review.
                if applied != (who == Who::Owner) {
                    unexpected_successes += usize::from(applied);
                    mismatches.push(format!("{route:?} as {who:?}: outcome {:?}", outcomes[0]));
                }
            }
        }
    }
    assert_eq!(unexpected_successes, 0, "{mismatches:#?}");
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert!(leaks.is_empty(), "{leaks:#?}");

    // Only the owner's edit is in the registry; the others' are rejected and kept.
    let stored = crate::util::registry_household(&server, in_a.id);
    assert_eq!(stored.address, "Số 7, Owner");
    let rejected = server.registry().rejected().expect("rejected");
    assert!(rejected
        .iter()
        .any(|r| r.device_id == revoked.id && r.reason == REVOKED_REASON));
    assert!(rejected.iter().any(|r| r.device_id == minh.id));
}

#[tokio::test]
async fn an_enumerator_of_one_village_cannot_read_or_change_another_villages_household() {
    let server = TestServer::start().await;
    server.add_user("lan", Role::Enumerator, &["00004/Thôn Đông"]);
    server.add_user("minh", Role::Enumerator, &["00004/Thôn Tây"]);
    let lan = Device::enrol(&server, "lan");
    let minh = Device::enrol(&server, "minh");
    let theirs = marked("Trần Thị Bích", "Thôn Tây", "001080000002");
    let ours = marked("Nguyễn Văn Ánh", "Thôn Đông", "001080000001");
    minh.save(&theirs);
    minh.sync().await;
    lan.save(&ours);
    lan.sync().await;
    assert!(lan.store.household(theirs.id).expect("read").is_none());
    let subject = theirs.id.to_string();

    // By id: "not found", and the attempt is recorded.
    let answer = call(
        &server,
        reqwest::Method::GET,
        &format!("/v1/households/{}", theirs.id),
        Some(&lan.token),
        Body::None,
    )
    .await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert!(!answer.text().contains("Trần Thị Bích"));
    assert!(audit_has(&server, "access_denied", "lan", &subject));

    // By a change: rejected, kept for review, not applied, recorded.
    let mutation = edit_mutation(&server, lan.id, &theirs, "Số 1, sửa trái phép");
    let answer = call(
        &server,
        reqwest::Method::POST,
        "/v1/sync/push",
        Some(&lan.token),
        Body::Bytes(push_bytes(lan.id, vec![mutation.clone()])),
    )
    .await;
    assert_eq!(answer.status, 200);
    let reply: PushReply =
        protocol::codec::decode(&answer.body, MAX_RESPONSE_BYTES).expect("reply");
    let PushReply::Accepted { outcomes, .. } = reply else {
        panic!("no gap expected");
    };
    assert!(
        matches!(&outcomes[0].outcome, Outcome::Rejected { reason } if reason.contains("outside the areas")),
        "{outcomes:?}"
    );
    assert_eq!(
        crate::util::registry_household(&server, theirs.id).address,
        theirs.address
    );
    assert!(server
        .registry()
        .rejected()
        .expect("rejected")
        .iter()
        .any(|r| r.device_id == lan.id && r.mutation == mutation));
    assert!(audit_has(&server, "access_denied", "lan", &subject));

    // Through the pull cursor: a page that starts right before the other village's change
    // carries nothing of it.
    let seq = server
        .registry()
        .household(theirs.id)
        .expect("read")
        .expect("exists")
        .last_seq;
    let answer = call(
        &server,
        reqwest::Method::POST,
        "/v1/sync/pull",
        Some(&lan.token),
        Body::Bytes(pull_bytes(lan.id, seq - 1)),
    )
    .await;
    assert_eq!(answer.status, 200);
    let page: PullResponse =
        protocol::codec::pull_page::decode(&answer.body, MAX_RESPONSE_BYTES).expect("page");
    assert!(page.changes.iter().all(|c| c.household_id != theirs.id));
    assert!(!answer.text().contains("Trần Thị Bích"));
    // Nor by naming the other device, to read its outcomes: refused and recorded.
    let answer = call(
        &server,
        reqwest::Method::POST,
        "/v1/sync/pull",
        Some(&lan.token),
        Body::Bytes(pull_bytes(minh.id, 0)),
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert!(audit_has(&server, "access_denied", "lan", "/v1/sync/pull"));

    // The other village's own enumerator and the administrator see it; the audit log is
    // theirs to read.
    let admin = server.session(ADMIN);
    let (status, audit) = server.get("/v1/admin/audit", &admin).await;
    assert_eq!(status, 200);
    assert!(audit
        .as_array()
        .expect("a list")
        .iter()
        .any(|e| e["event"] == "access_denied"
            && e["actor"] == "lan"
            && e["subject"] == subject.as_str()));
    let (status, _) = server
        .get(&format!("/v1/households/{}", theirs.id), &minh.token)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_device_revoked_while_offline_pushes_its_work_which_is_kept_for_review_not_applied_and_not_lost(
) {
    let server = TestServer::start().await;
    server.add_user("lan", Role::Enumerator, &["00004/Thôn Đông"]);
    server.add_user("giam.sat", Role::Supervisor, &["00004"]);
    let lan = Device::enrol(&server, "lan");
    let existing = household("Lê Văn Cường", "Thôn Đông");
    lan.save(&existing);
    lan.sync().await;

    // Offline: a new household and an edit, then the device is revoked (lost, say).
    let new = marked("Phạm Thị Dung", "Thôn Đông", "001080000004");
    lan.save(&new);
    let mut edited = existing.clone();
    edited.address = "Số 12, xóm Giữa".into();
    lan.save(&edited);
    let admin = server.session(ADMIN);
    let answer = call(
        &server,
        reqwest::Method::POST,
        &format!("/v1/admin/devices/{}/revoke", lan.id),
        Some(&admin),
        Body::None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(audit_has(&server, "device_revoked", ADMIN, "lan"));

    // Back online: the push is accepted as review items; the pull is refused.
    let result = client_core::sync(&lan.store, &lan.transport, |_| {}).await;
    match result {
        Err(SyncError::Transport(TransportError::Denied {
            status: 403,
            message,
        })) => {
            assert!(message.contains("thu hồi"), "{message}");
        }
        other => panic!("the pull of a revoked device is refused, got {other:?}"),
    }

    // Server: nothing applied, everything kept with its payload, for the supervisor.
    assert!(server.registry().household(new.id).expect("read").is_none());
    assert_eq!(
        crate::util::registry_household(&server, existing.id).address,
        existing.address
    );
    let kept: Vec<_> = server
        .registry()
        .rejected()
        .expect("rejected")
        .into_iter()
        .filter(|r| r.device_id == lan.id)
        .collect();
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|r| r.reason == REVOKED_REASON));
    let create = kept
        .iter()
        .find(|r| r.mutation.household_id == new.id)
        .expect("the create is kept");
    let mut record = protocol::fields::FieldMap::new();
    protocol::fields::apply(&mut record, &create.mutation.changes);
    assert_eq!(protocol::fields::unflatten(&record).ok(), Some(new.clone()));
    let supervisor = server.session("giam.sat");
    let (status, review) = server.get("/v1/rejected", &supervisor).await;
    assert_eq!(status, 200);
    let review = review.as_array().expect("a list").clone();
    assert_eq!(review.len(), 2, "{review:?}");
    assert!(review.iter().all(|r| r["reason"] == REVOKED_REASON));
    assert!(serde_json::to_string(&review)
        .expect("json")
        .contains("Phạm Thị Dung"));
    assert!(audit_has(
        &server,
        "revoked_device_pushed",
        "lan",
        &lan.id.to_string()
    ));

    // Device: the enumerator's work is still there, with the reason.
    assert!(lan.store.pending().expect("outbox").is_empty());
    let rejections = lan.store.rejections().expect("rejections");
    assert_eq!(rejections.len(), 2);
    assert!(rejections.iter().all(|r| r.reason == REVOKED_REASON));
    assert_eq!(lan.view(new.id), new);
    assert_eq!(lan.view(existing.id), edited);
    for rejection in rejections {
        assert!(lan
            .store
            .rejected_mutation(rejection.mutation_seq)
            .expect("read")
            .is_some());
    }
    // And it gets no data, however it asks.
    let answer = call(
        &server,
        reqwest::Method::POST,
        "/v1/sync/pull",
        Some(&lan.token),
        Body::Bytes(pull_bytes(lan.id, 0)),
    )
    .await;
    assert_eq!(answer.status, 403);
    let (status, _) = server
        .get(&format!("/v1/households/{}", existing.id), &lan.token)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn passwords_and_tokens_never_appear_in_logs_or_responses() {
    let logs = logs();
    let server = TestServer::start().await;
    let admin = server.session(ADMIN);
    let password = format!("mật-khẩu-{}", Uuid::new_v4().simple());
    let second = format!("mật-khẩu-mới-{}", Uuid::new_v4().simple());
    let wrong = format!("đoán-sai-{}", Uuid::new_v4().simple());
    let mut answers = Vec::new();
    let mut issued = Vec::new();

    let created = call(
        &server,
        reqwest::Method::POST,
        "/v1/admin/users",
        Some(&admin),
        Body::Json(json!({
            "username": "giam.sat",
            "password": password,
            "role": "supervisor",
            "areas": ["00004"],
        })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    answers.push(created);
    let failed = call(
        &server,
        reqwest::Method::POST,
        "/v1/auth/login",
        None,
        Body::Json(json!({"username": "giam.sat", "password": wrong})),
    )
    .await;
    assert_eq!(failed.status, 401);
    answers.push(failed);
    let signed_in = call(
        &server,
        reqwest::Method::POST,
        "/v1/auth/login",
        None,
        Body::Json(json!({"username": "giam.sat", "password": password})),
    )
    .await;
    assert_eq!(signed_in.status, 200);
    let session = signed_in.json()["token"]
        .as_str()
        .expect("a token")
        .to_string();
    issued.push(signed_in);
    let device_id = Uuid::now_v7();
    let enrolled = call(
        &server,
        reqwest::Method::POST,
        "/v1/auth/enrol",
        None,
        Body::Json(json!({
            "username": "giam.sat",
            "password": password,
            "device_id": device_id.to_string(),
        })),
    )
    .await;
    assert_eq!(enrolled.status, 200);
    let device_token = enrolled.json()["device_token"]
        .as_str()
        .expect("a token")
        .to_string();
    issued.push(enrolled);

    // Use both tokens everywhere, change the password, look at everything an administrator
    // can see.
    for (path, token) in [
        ("/v1/conflicts", &session),
        ("/v1/rejected", &device_token),
        ("/v1/admin/users", &admin),
        ("/v1/admin/devices", &admin),
    ] {
        answers.push(call(&server, reqwest::Method::GET, path, Some(token), Body::None).await);
    }
    answers.push(
        call(
            &server,
            reqwest::Method::POST,
            "/v1/sync/pull",
            Some(&device_token),
            Body::Bytes(pull_bytes(device_id, 0)),
        )
        .await,
    );
    answers.push(
        call(
            &server,
            reqwest::Method::POST,
            "/v1/sync/pull",
            Some(&format!("{device_token}0")),
            Body::Bytes(pull_bytes(device_id, 0)),
        )
        .await,
    );
    answers.push(
        call(
            &server,
            reqwest::Method::POST,
            "/v1/admin/users/giam.sat/password",
            Some(&admin),
            Body::Json(json!({ "password": second })),
        )
        .await,
    );
    answers.push(
        call(
            &server,
            reqwest::Method::POST,
            "/v1/auth/login",
            None,
            Body::Json(json!({"username": password, "password": password})),
        )
        .await,
    );
    answers.push(
        call(
            &server,
            reqwest::Method::GET,
            "/v1/admin/audit",
            Some(&admin),
            Body::None,
        )
        .await,
    );

    let secrets = [
        password.as_str(),
        second.as_str(),
        wrong.as_str(),
        session.as_str(),
        device_token.as_str(),
        admin.as_str(),
    ];
    for answer in &answers {
        let text = answer.text();
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "a response carries a secret: {text}"
            );
        }
        assert!(
            !text.contains("$argon2"),
            "a response carries a hash: {text}"
        );
    }
    // A token appears once, in the answer that issued it, and never a password.
    for answer in &issued {
        let text = answer.text();
        for secret in [&password, &second, &wrong] {
            assert!(!text.contains(secret.as_str()));
        }
    }
    let logged = String::from_utf8_lossy(
        &logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(
        logged.contains("signed in") && logged.contains("giam.sat"),
        "the logs were captured"
    );
    for secret in secrets {
        assert!(!logged.contains(secret), "the logs carry a secret");
    }
    assert!(!logged.contains("$argon2"));
    for entry in server
        .state
        .auth()
        .accounts()
        .audit_after(0, 10_000)
        .expect("audit")
    {
        let line = format!("{entry:?}");
        for secret in secrets {
            assert!(
                !line.contains(secret),
                "the audit log carries a secret: {line}"
            );
        }
    }
}

#[tokio::test]
async fn the_sign_in_limit_holds_and_a_locked_account_says_when_it_can_try_again() {
    let clock = Arc::new(AtomicI64::new(1_767_225_600_000));
    let server = TestServer::start_with(AuthConfig {
        clock: Clock::manual(Arc::clone(&clock)),
        ..AuthConfig::default()
    })
    .await;
    server.add_user("giam.sat", Role::Supervisor, &["00004"]);
    let login = |password: &str| {
        let body = Body::Json(json!({"username": "giam.sat", "password": password}));
        call(&server, reqwest::Method::POST, "/v1/auth/login", None, body)
    };
    for attempt in 1..=4 {
        let answer = login("đoán thử mật khẩu").await;
        assert_eq!(answer.status, 401, "attempt {attempt}: {}", answer.text());
    }
    let locked = login("đoán thử mật khẩu").await;
    assert_eq!(locked.status, 429, "{}", locked.text());
    let until = clock.load(Ordering::SeqCst) + 15 * 60 * 1000;
    assert_eq!(
        locked
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("900")
    );
    assert!(
        locked.text().contains(&vietnam_time(until)),
        "{}",
        locked.text()
    );
    assert!(
        locked.text().contains("try again after"),
        "{}",
        locked.text()
    );

    // The right password waits too, and so does enrolling a device with it.
    assert_eq!(login(PASSWORD).await.status, 429);
    let enrol = call(
        &server,
        reqwest::Method::POST,
        "/v1/auth/enrol",
        None,
        Body::Json(json!({
            "username": "giam.sat",
            "password": PASSWORD,
            "device_id": Uuid::now_v7().to_string(),
        })),
    )
    .await;
    assert_eq!(enrol.status, 429);
    assert!(audit_has(&server, "locked", "", "giam.sat"));

    // A minute before the end it is still locked; at the end the right password works.
    clock.fetch_add(14 * 60 * 1000, Ordering::SeqCst);
    assert_eq!(login(PASSWORD).await.status, 429);
    clock.fetch_add(60 * 1000, Ordering::SeqCst);
    assert_eq!(login(PASSWORD).await.status, 200);

    // One address guessing many accounts is locked after its own allowance.
    let mut statuses = BTreeSet::new();
    for n in 0..20 {
        let body = Body::Json(json!({"username": format!("khong.co.{n}"), "password": "x"}));
        statuses.insert(
            call(&server, reqwest::Method::POST, "/v1/auth/login", None, body)
                .await
                .status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        login(PASSWORD).await.status,
        429,
        "the address is locked for everyone"
    );
}

#[tokio::test]
async fn a_reassignment_or_a_move_takes_effect_on_the_next_sync_and_unsynced_work_is_kept() {
    let server = TestServer::start().await;
    server.add_user("lan", Role::Enumerator, &["00004/Thôn Đông"]);
    server.add_user("giam.sat", Role::Supervisor, &["00004"]);
    let office = Device::new(&server);
    let lan = Device::enrol(&server, "lan");
    let supervisor = Device::enrol(&server, "giam.sat");
    let stays = household("Nguyễn Văn Ánh", "Thôn Đông");
    let moves = household("Đỗ Văn Hùng", "Thôn Đông");
    let elsewhere = household("Trần Thị Bích", "Thôn Nam");
    for record in [&stays, &moves, &elsewhere] {
        office.save(record);
    }
    office.sync().await;
    lan.sync().await;
    assert!(lan.store.household(stays.id).expect("read").is_some());
    assert!(lan.store.household(moves.id).expect("read").is_some());
    assert!(lan.store.household(elsewhere.id).expect("read").is_none());

    // A supervisor records that a household moved to another village: it leaves lan's
    // device on lan's next sync.
    supervisor.sync().await;
    let mut moved = moves.clone();
    moved.village = "Thôn Tây".into();
    supervisor.save(&moved);
    assert_eq!(supervisor.sync().await.applied, 1);
    let report = lan.sync().await;
    assert_eq!(report.left_scope, 1, "{report:?}");
    assert!(lan.store.household(moves.id).expect("read").is_none());

    // Offline, lan edits a household of Thôn Đông; meanwhile Thôn Đông is taken away and
    // Thôn Nam given.
    let mut edited = stays.clone();
    edited.address = "Số 3, đã sửa".into();
    lan.save(&edited);
    let admin = server.session(ADMIN);
    let answer = call(
        &server,
        reqwest::Method::POST,
        "/v1/admin/users/lan/areas",
        Some(&admin),
        Body::Json(json!({"assign": ["00004/Thôn Nam"], "unassign": ["00004/Thôn Đông"]})),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(audit_has(&server, "areas_changed", ADMIN, "lan"));

    let report = lan.sync().await;
    assert!(report.areas_grew, "{report:?}");
    assert_eq!(
        report.rejected.len(),
        1,
        "the edit is kept for review: {report:?}"
    );
    assert!(lan.store.household(elsewhere.id).expect("read").is_some());
    assert!(lan.store.household(stays.id).expect("read").is_none());
    // The edit is not lost: on the device as a rejection with its payload, and on the server.
    let rejection = &lan.store.rejections().expect("rejections")[0];
    let payload = lan
        .store
        .rejected_mutation(rejection.mutation_seq)
        .expect("read")
        .expect("kept");
    assert!(payload
        .changes
        .iter()
        .any(|c| c.value == Some(FieldValue::Text("Số 3, đã sửa".into()))));
    assert!(server
        .registry()
        .rejected()
        .expect("rejected")
        .iter()
        .any(|r| r.device_id == lan.id && r.mutation.household_id == stays.id));
    assert_eq!(
        crate::util::registry_household(&server, stays.id).address,
        stays.address
    );
    // Nothing more to do: the next sync is quiet.
    let report = lan.sync().await;
    assert!(!report.areas_grew && report.left_scope == 0, "{report:?}");
}

#[tokio::test]
async fn a_request_that_takes_too_long_gets_a_clear_408() {
    let server = TestServer::start_with(AuthConfig {
        request_timeout: Duration::from_millis(300),
        ..AuthConfig::default()
    })
    .await;
    let lan = Device::new(&server);
    let address = server.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // A push that announces a body and never sends it.
    let head = format!(
        "POST /v1/sync/push HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n",
        lan.token
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .expect("write");
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response),
    )
    .await;
    assert!(read.is_ok(), "the server answered in time");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("took longer than"), "{response}");
}
