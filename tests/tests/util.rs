//! Helpers shared by every topic: a running server, a device, sample households.

use std::sync::atomic::{AtomicUsize, Ordering};

use client_core::{HttpTransport, Request, Response, Store, SyncReport, Transport, TransportError};
use protocol::household::{
    Dwelling, Household, HouseholdFlags, IncomeEvidence, Member, PovertyCauses, Relationship,
    ReviewRound, RoundKind, Sex,
};
use tempfile::TempDir;
use uuid::Uuid;

/// A registry server on an ephemeral port, stopped when dropped.
pub struct TestServer {
    pub url: String,
    pub state: server::AppState,
    _dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = server::AppState::open(dir.path()).expect("open registry");
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
    pub transport: Counting<HttpTransport>,
    _dir: TempDir,
}

impl Device {
    pub fn new(server: &TestServer) -> Device {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        let id = Uuid::now_v7();
        store.setup(&server.url, id).expect("setup");
        let transport = Counting::new(HttpTransport::new(&server.url).expect("transport"));
        Device {
            store,
            id,
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
