//! Helpers shared by every topic: a running server, a device, sample households.

use std::sync::atomic::{AtomicUsize, Ordering};

use client_core::{HttpTransport, Request, Response, Store, SyncReport, Transport, TransportError};
use protocol::household::{
    Dwelling, Household, HouseholdFlags, IncomeEvidence, Member, PovertyCauses, Relationship,
    ReviewRound, RoundKind, Sex,
};
use tempfile::TempDir;
use uuid::Uuid;

/// The password of every account a [`TestServer`] makes.
pub const PASSWORD: &str = "mật khẩu thử nghiệm";
/// An administrator of everything, for JSON views and administration.
pub const ADMIN: &str = "quan.tri";
/// The account [`Device::new`] enrols for: an administrator of the whole country, so that the
/// topics that are not about access record households in any commune. `auth` enrols
/// enumerators of one village instead ([`Device::enrol`]).
pub const ALL_AREAS: &str = "toan.quoc";

/// A registry server on an ephemeral port, stopped when dropped. It starts with two accounts,
/// [`ADMIN`] and [`ALL_AREAS`], both with [`PASSWORD`].
pub struct TestServer {
    pub url: String,
    pub state: server::AppState,
    _dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(server::auth::AuthConfig::default()).await
    }

    /// A server whose accounts run with `config` (a clock moved by hand, short limits).
    pub async fn start_with(config: server::auth::AuthConfig) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = server::AppState::open(dir.path())
            .expect("open registry")
            .with_auth_config(config)
            .expect("open accounts");
        for name in [ADMIN, ALL_AREAS] {
            state
                .auth()
                .create_user(
                    &server::auth::Actor::command_line(),
                    server::auth::NewUser {
                        username: name.to_string(),
                        password: PASSWORD.to_string(),
                        role: server::scope::Role::Administrator,
                        areas: vec![server::auth::Area::Everything],
                    },
                )
                .expect("create a test account");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = state.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            server::run(listener, serving, shutdown)
                .await
                .expect("server runs");
        });
        TestServer {
            url: format!("http://{addr}"),
            state,
            _dir: dir,
            stop: Some(stop),
        }
    }

    pub fn registry(&self) -> &server::Registry {
        self.state.registry()
    }

    /// Makes an account through the server's library, as `server user add` does.
    pub fn add_user(&self, name: &str, role: server::scope::Role, areas: &[&str]) {
        let auth = self.state.auth();
        let areas = areas
            .iter()
            .map(|area| server::auth::Area::parse(area, auth.areas()).expect("a valid area"))
            .collect();
        auth.create_user(
            &server::auth::Actor::command_line(),
            server::auth::NewUser {
                username: name.to_string(),
                password: PASSWORD.to_string(),
                role,
                areas,
            },
        )
        .expect("create the account");
    }

    /// A session token of `name`, signed in through the server's library.
    pub fn session(&self, name: &str) -> String {
        self.state
            .auth()
            .login(name, PASSWORD, None)
            .expect("sign in")
            .token
    }

    /// GET a JSON view as `token`; returns the status and the body (JSON, or the refusal as a
    /// JSON string).
    pub async fn get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, body)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An enumerator's device: its own store in a temp dir, set up against a server.
pub struct Device {
    pub store: Store,
    pub id: Uuid,
    /// The device token, for tests that send requests by hand.
    pub token: String,
    pub transport: Counting<HttpTransport>,
    _dir: TempDir,
}

impl Device {
    /// A device enrolled for [`ALL_AREAS`].
    pub fn new(server: &TestServer) -> Device {
        Device::enrol(server, ALL_AREAS)
    }

    /// A device enrolled for `user` (whose password is [`PASSWORD`]), through the server's
    /// library, as `ho init` does over HTTP.
    pub fn enrol(server: &TestServer, user: &str) -> Device {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        let id = Uuid::now_v7();
        store.setup(&server.url, id).expect("setup");
        let enrolled = server
            .state
            .auth()
            .enrol(user, PASSWORD, id, None)
            .expect("enrol the device");
        store
            .set_enrolment(&client_core::Enrolment {
                user: user.to_string(),
                token: enrolled.token.clone(),
            })
            .expect("keep the token");
        let transport = Counting::new(
            HttpTransport::new(&server.url)
                .expect("transport")
                .with_token(&enrolled.token),
        );
        Device {
            store,
            id,
            token: enrolled.token,
            transport,
            _dir: dir,
        }
    }

    pub async fn sync(&self) -> SyncReport {
        client_core::sync(&self.store, &self.transport, |_| {})
            .await
            .expect("sync succeeds")
    }

    pub fn save(&self, household: &Household) -> u64 {
        self.store
            .save_household(household)
            .expect("durable save")
            .mutation_seq
    }

    /// The household as this device shows it.
    pub fn view(&self, id: Uuid) -> Household {
        self.store
            .household(id)
            .expect("read store")
            .unwrap_or_else(|| panic!("device {} does not have household {id}", self.id))
            .household()
            .expect("well-formed view")
    }
}

/// A transport wrapper that counts requests by kind.
pub struct Counting<T> {
    pub inner: T,
    pub pushes: AtomicUsize,
    pub pulls: AtomicUsize,
}

impl<T> Counting<T> {
    pub fn new(inner: T) -> Counting<T> {
        Counting {
            inner,
            pushes: AtomicUsize::new(0),
            pulls: AtomicUsize::new(0),
        }
    }

    pub fn reset(&self) {
        self.pushes.store(0, Ordering::SeqCst);
        self.pulls.store(0, Ordering::SeqCst);
    }

    pub fn counts(&self) -> (usize, usize) {
        (
            self.pushes.load(Ordering::SeqCst),
            self.pulls.load(Ordering::SeqCst),
        )
    }
}

impl<T: Transport> Transport for Counting<T> {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        match request {
            Request::Push(_) => self.pushes.fetch_add(1, Ordering::SeqCst),
            Request::Pull(_) => self.pulls.fetch_add(1, Ordering::SeqCst),
        };
        self.inner.send(request).await
    }
}

pub fn member(name: &str, born: &str, sex: Sex, relationship: Relationship) -> Member {
    Member {
        id: Uuid::now_v7(),
        full_name: name.to_string(),
        sex,
        date_of_birth: born.parse().expect("valid date"),
        personal_id: None,
        relationship,
        ethnicity: Some("Kinh".to_string()),
        in_school: None,
        qualification: None,
        employment: None,
        has_pension: None,
        health_insurance: Some(true),
        disability_or_severe_illness: None,
        child_nutrition: None,
    }
}

/// A valid household headed by `head_name` in commune 00004, village `village`.
pub fn household(head_name: &str, village: &str) -> Household {
    let head = member(head_name, "1980-05-02", Sex::Male, Relationship::Head);
    Household {
        id: Uuid::now_v7(),
        round: ReviewRound {
            year: 2025,
            kind: RoundKind::Periodic,
        },
        commune_code: "00004".to_string(),
        village: village.to_string(),
        address: "Số 1, đường Làng".to_string(),
        gps: None,
        head_member_id: Some(head.id),
        members: vec![head],
        flags: HouseholdFlags::default(),
        income: IncomeEvidence {
            estimated_per_person_vnd: Some(1_200_000),
            ..IncomeEvidence::default()
        },
        dwelling: Dwelling {
            floor_area_m2: Some(30),
            ..Dwelling::default()
        },
        causes_of_poverty: PovertyCauses::default(),
        support_needs: Vec::new(),
        void: None,
    }
}

/// The registry's current record of a household, as a Household.
pub fn registry_household(server: &TestServer, id: Uuid) -> Household {
    server
        .registry()
        .household(id)
        .expect("read registry")
        .unwrap_or_else(|| panic!("registry does not have household {id}"))
        .household()
        .expect("well-formed registry record")
}
