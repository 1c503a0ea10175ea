//! Accounts, enrolled devices, sessions, the sign-in limit and the audit log.
//!
//! # Layout
//! - [`secret`]: Argon2id password hashes, random bearer tokens and their stored hashes.
//! - [`throttle`]: the limit on failed sign-ins per account and per address.
//! - [`routes`]: `/v1/auth/*` (sign in, enrol, sign out) and `/v1/admin/*` (users, areas,
//!   devices, the audit log), and the [`crate::Caller`] extractor every route uses.
//! - [`cli`]: `server user …` and `server device …`, working on a stopped server's data
//!   directory.
//!
//! [`Auth`] holds the operations both faces share. Each checks who acts ([`Actor`]), writes
//! its change and its audit entry in one durable write (`store::Accounts`), and never logs,
//! stores or returns a password or a token other than the one it has just issued.
//!
//! Roles and areas: an enumerator holds villages, a supervisor communes, an administrator one
//! province or everything ([`protocol::access::Scope`]). Supervisors and administrators sign
//! in for a session token; anyone signs in once on a device to enrol it, which binds a device
//! token to that user and device. The user's role and areas are read on every request, so a
//! reassignment or a revocation takes effect on the next one.

pub mod cli;
pub mod routes;
pub mod secret;
pub mod throttle;

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use protocol::access::{same_village, Scope};
use protocol::areas::{AreaRegistry, Village};
use uuid::Uuid;

use crate::scope::{Credential, Principal, Role};
use crate::store::{
    Accounts, AccountsBatch, AuditDraft, AuditEntry, AuditEvent, DeviceRecord, Registry,
    Revocation, SessionRecord, StoreError, UserRecord,
};
use secret::{SecretError, TokenKind};
use throttle::{LoginLimits, Subject, Throttle};

/// The clock sign-ins, sessions and the audit log read, in Unix milliseconds.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(crate::now_ms))
    }

    /// A clock that reads `ms`, for tests that move time by hand.
    pub fn manual(ms: Arc<AtomicI64>) -> Clock {
        Clock(Arc::new(move || ms.load(Ordering::SeqCst)))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// How sign-in behaves, and how long a request may take.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// How long a session token is valid.
    pub session_ttl_ms: i64,
    pub limits: LoginLimits,
    /// How long any request may take before it is answered 408 (see [`crate::limits`]).
    pub request_timeout: std::time::Duration,
    pub clock: Clock,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            session_ttl_ms: 12 * 60 * 60 * 1000,
            limits: LoginLimits::default(),
            request_timeout: crate::limits::REQUEST_TIMEOUT,
            clock: Clock::system(),
        }
    }
}

/// Why an account operation was refused. Every message is for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that proves nothing (unknown, expired, wrong password).
    #[error("{0}")]
    Unauthenticated(String),
    /// Signed in, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed sign-ins: refused until `until_ms`.
    #[error("{message}")]
    Locked {
        until_ms: i64,
        retry_after_secs: u64,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            AuthError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::Invalid(_) => StatusCode::BAD_REQUEST,
            AuthError::NotFound(_) => StatusCode::NOT_FOUND,
            AuthError::Conflict(_) => StatusCode::CONFLICT,
            AuthError::Store(_) | AuthError::Secret(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// How a sign-in under a name that is no account is logged and recorded.
const UNKNOWN_ACCOUNT: &str = "(không có tài khoản này / no such account)";

fn wrong_credentials() -> AuthError {
    AuthError::Unauthenticated(
        "sai tên đăng nhập hoặc mật khẩu / wrong user name or password".to_string(),
    )
}

/// An area as written in the JSON API and on the command line: `00004/Thôn Đông` (a village
/// of a commune), `00004` (a commune), `01` (a province) or `*` (everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Area {
    Village(Village),
    Commune(String),
    Province(String),
    Everything,
}

impl Area {
    pub fn parse(text: &str, areas: &AreaRegistry) -> Result<Area, AuthError> {
        let text = text.trim();
        let invalid = |problem: String| {
            AuthError::Invalid(format!(
                "khu vực '{text}' không hợp lệ / the area '{text}' is invalid: {problem}. Write a village as 00004/Thôn Đông, a commune as 00004, a province as 01, or * for everything"
            ))
        };
        if text == "*" {
            return Ok(Area::Everything);
        }
        if let Some((commune, name)) = text.split_once('/') {
            return Village::new(areas, commune.trim(), name)
                .map(Area::Village)
                .map_err(|error| invalid(error.to_string()));
        }
        match text.len() {
            2 => areas
                .province(text)
                .map(|province| Area::Province(province.code.clone()))
                .map_err(|error| invalid(error.to_string())),
            _ => areas
                .commune(text)
                .map(|commune| Area::Commune(commune.code.clone()))
                .map_err(|error| invalid(error.to_string())),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Area::Village(village) => format!("{}/{}", village.commune_code, village.name),
            Area::Commune(code) | Area::Province(code) => code.clone(),
            Area::Everything => "*".to_string(),
        }
    }
}

/// A scope written as areas.
pub fn area_texts(scope: &Scope) -> Vec<String> {
    match scope {
        Scope::Villages(villages) => villages
            .iter()
            .map(|v| Area::Village(v.clone()).text())
            .collect(),
        Scope::Communes(communes) => communes.clone(),
        Scope::Province(code) => vec![code.clone()],
        Scope::Everything => vec!["*".to_string()],
    }
}

/// The scope a role with these areas has; the kinds of area must fit the role.
pub fn scope_for(role: Role, areas: &[Area]) -> Result<Scope, AuthError> {
    let wrong = |area: &Area| {
        AuthError::Invalid(format!(
            "{} ({}) không nhận khu vực '{}' / an {} takes {}, not '{}'",
            role.label_vi(),
            role.as_str(),
            area.text(),
            role.as_str(),
            match role {
                Role::Enumerator => "villages (00004/Thôn Đông)",
                Role::Supervisor => "communes (00004)",
                Role::Administrator => "one province (01) or everything (*)",
            },
            area.text()
        ))
    };
    match role {
        Role::Enumerator => {
            let mut villages: Vec<Village> = Vec::new();
            for area in areas {
                let Area::Village(village) = area else {
                    return Err(wrong(area));
                };
                if !villages.iter().any(|v| {
                    v.commune_code == village.commune_code && same_village(&v.name, &village.name)
                }) {
                    villages.push(village.clone());
                }
            }
            Ok(Scope::Villages(villages))
        }
        Role::Supervisor => {
            let mut communes: Vec<String> = Vec::new();
            for area in areas {
                let Area::Commune(code) = area else {
                    return Err(wrong(area));
                };
                if !communes.contains(code) {
                    communes.push(code.clone());
                }
            }
            Ok(Scope::Communes(communes))
        }
        Role::Administrator => match areas {
            [Area::Province(code)] => Ok(Scope::Province(code.clone())),
            [Area::Everything] => Ok(Scope::Everything),
            [other] => Err(wrong(other)),
            _ => Err(AuthError::Invalid(
                "quản trị viên có đúng một tỉnh hoặc toàn quốc / an administrator has exactly one province (01) or everything (*)"
                    .to_string(),
            )),
        },
    }
}

/// A user name as stored: trimmed, lower case; 3 to 64 of a–z, 0–9, `.`, `_`, `-`.
pub fn check_username(name: &str) -> Result<String, AuthError> {
    let name = name.trim().to_lowercase();
    let ok = (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(AuthError::Invalid(format!(
            "tên đăng nhập '{}' không hợp lệ / the user name '{}' is invalid: use 3 to 64 letters a-z without accents, digits, '.', '_' or '-' (e.g. lan.nguyen)",
            name.chars().take(80).collect::<String>(),
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// Who performs an administrative operation, and over what.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub address: String,
    /// What the actor may administer: users whose areas lie inside it.
    pub reach: Scope,
}

impl Actor {
    /// The operator at the server's command line, with the data directory in hand.
    pub fn command_line() -> Actor {
        Actor {
            name: "(dòng lệnh / command line)".to_string(),
            address: "command line".to_string(),
            reach: Scope::Everything,
        }
    }

    /// An administrator signed in with a session; anyone else is refused.
    pub fn of(principal: &Principal) -> Result<Actor, AuthError> {
        if principal.role != Role::Administrator {
            return Err(AuthError::Forbidden(format!(
                "chỉ quản trị viên được làm việc này / only an administrator may do this; you are signed in as {} ({})",
                principal.role.label_vi(),
                principal.role.as_str()
            )));
        }
        if principal.credential != Credential::Session {
            return Err(AuthError::Forbidden(
                "quản trị cần đăng nhập, không dùng mã thiết bị / administration needs a signed-in session (POST /v1/auth/login), not a device token"
                    .to_string(),
            ));
        }
        Ok(Actor {
            name: principal.username.clone(),
            address: principal.address_text(),
            reach: principal.scope.clone(),
        })
    }
}

/// A session just opened. The token is shown once, to the person who signed in.
#[derive(Clone)]
pub struct SignedIn {
    pub token: String,
    pub expires_ms: i64,
    pub user: UserRecord,
}

/// A device just enrolled. The token is shown once, to the device.
#[derive(Clone)]
pub struct Enrolled {
    pub token: String,
    pub device: DeviceRecord,
    pub user: UserRecord,
}

/// A new account.
#[derive(Clone)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    pub areas: Vec<Area>,
}

/// Formats a time for people in Vietnam (UTC+7), to the minute.
pub fn vietnam_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1000) + 7 * 3600;
    let day = protocol::household::Date::from_unix_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!("{day} {:02}:{:02}", of_day / 3600, of_day % 3600 / 60)
}

/// The accounts service; see the module docs.
#[derive(Debug)]
pub struct Auth {
    accounts: Accounts,
    throttle: Throttle,
    config: AuthConfig,
    areas: Arc<AreaRegistry>,
}

impl Auth {
    /// Opens the accounts beside `registry`, with the embedded code set for provinces.
    pub fn open(registry: &Registry, config: AuthConfig) -> Result<Auth, StoreError> {
        // Parsed once per process: a server reopened (a restart in a simulation) reuses it.
        static AREAS: std::sync::OnceLock<Arc<AreaRegistry>> = std::sync::OnceLock::new();
        let areas = AREAS.get_or_init(|| {
            // The embedded code set is parsed by protocol's tests; it cannot fail in a build
            // that passed them.
            #[allow(clippy::expect_used)]
            Arc::new(AreaRegistry::embedded().expect("the embedded code set parses"))
        });
        Ok(Auth {
            accounts: Accounts::open(registry)?,
            throttle: Throttle::new(config.limits),
            config,
            areas: Arc::clone(areas),
        })
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn areas(&self) -> &AreaRegistry {
        &self.areas
    }

    pub fn now_ms(&self) -> i64 {
        self.config.clock.now_ms()
    }

    pub fn request_timeout(&self) -> std::time::Duration {
        self.config.request_timeout
    }

    fn draft(
        &self,
        event: AuditEvent,
        actor: &str,
        address: &str,
        subject: &str,
        detail: String,
    ) -> AuditDraft {
        AuditDraft {
            at_ms: self.now_ms(),
            event,
            actor: actor.to_string(),
            address: address.to_string(),
            subject: subject.to_string(),
            detail,
        }
    }

    /// Records an audit entry on its own. A failure to record is logged and does not fail
    /// the request it describes.
    pub fn record(&self, draft: AuditDraft) {
        let mut batch = AccountsBatch::default();
        batch.audit(draft);
        if let Err(error) = self.accounts.write(batch) {
            tracing::error!(%error, "writing an audit entry failed");
        }
    }

    /// Records a denied access attempt by a signed-in user.
    pub fn denied(&self, principal: &Principal, subject: &str, detail: String) {
        tracing::warn!(user = %principal.username, %subject, "access denied");
        self.record(self.draft(
            AuditEvent::AccessDenied,
            &principal.username,
            &principal.address_text(),
            subject,
            detail,
        ));
    }

    /// Records that a revoked device pushed and its mutations were kept for review.
    pub fn revoked_device_pushed(&self, principal: &Principal, device: Uuid, count: usize) {
        self.record(self.draft(
            AuditEvent::RevokedDevicePushed,
            &principal.username,
            &principal.address_text(),
            &device.to_string(),
            format!("{count} thay đổi được giữ để xem xét, không áp dụng / {count} mutations kept for review, not applied"),
        ));
    }

    /// Checks a user name and password, counting failures against the limit. Runs Argon2:
    /// call it off the async threads.
    fn verify(
        &self,
        username: &str,
        password: &str,
        address: Option<IpAddr>,
        doing: &str,
    ) -> Result<UserRecord, AuthError> {
        let address_text = address.map_or_else(String::new, |a| a.to_string());
        let username = username.trim().to_lowercase();
        let now = self.now_ms();
        if let Some(lock) = self.throttle.check(&username, address, now) {
            return Err(self.locked(lock.until_ms, &lock.subject, now));
        }
        let user = self.accounts.user(&username)?;
        // People type passwords into the name field: a name that is no account is never
        // logged or recorded, only that it was unknown.
        let shown = if user.is_some() {
            username.clone()
        } else {
            UNKNOWN_ACCOUNT.to_string()
        };
        let verified = match &user {
            Some(user) => secret::verify_password(password, &user.password_hash),
            None => {
                secret::verify_nothing(password);
                false
            }
        };
        match user {
            Some(user) if verified => {
                self.throttle.succeeded(&username);
                Ok(user)
            }
            _ => {
                let started = self.throttle.failed(&username, address, now);
                let mut batch = AccountsBatch::default();
                tracing::info!(user = %shown, address = %address_text, "{doing} failed");
                batch.audit(self.draft(
                    AuditEvent::SignInFailed,
                    "",
                    &address_text,
                    &shown,
                    format!(
                        "{doing}: sai tên đăng nhập hoặc mật khẩu / wrong user name or password"
                    ),
                ));
                for lock in &started {
                    batch.audit(self.draft(
                        AuditEvent::Locked,
                        "",
                        &address_text,
                        &match &lock.subject {
                            Subject::Account(_) => shown.clone(),
                            Subject::Address(ip) => ip.to_string(),
                        },
                        format!(
                            "khóa đến {} / locked until {} (Vietnam time)",
                            vietnam_time(lock.until_ms),
                            vietnam_time(lock.until_ms)
                        ),
                    ));
                }
                self.accounts.write(batch)?;
                match started.into_iter().max_by_key(|lock| lock.until_ms) {
                    Some(lock) => Err(self.locked(lock.until_ms, &lock.subject, now)),
                    None => Err(wrong_credentials()),
                }
            }
        }
    }

    fn locked(&self, until_ms: i64, subject: &Subject, now: i64) -> AuthError {
        let retry_after_secs = u64::try_from((until_ms - now + 999) / 1000)
            .unwrap_or(1)
            .max(1);
        let minutes = retry_after_secs.div_ceil(60);
        let what = match subject {
            Subject::Account(_) => "tài khoản này / this account",
            Subject::Address(_) => "địa chỉ mạng này / this network address",
        };
        let at = vietnam_time(until_ms);
        AuthError::Locked {
            until_ms,
            retry_after_secs,
            message: format!(
                "đăng nhập sai quá nhiều lần, {what} bị khóa tạm thời; thử lại sau {at} (giờ Việt Nam, khoảng {minutes} phút nữa) / too many failed sign-ins: {what} is locked; try again after {at} Vietnam time (in about {minutes} minutes)"
            ),
        }
    }

    /// Signs a supervisor or administrator in: a session token valid for the configured time.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<SignedIn, AuthError> {
        let user = self.verify(username, password, address, "đăng nhập / sign-in")?;
        let address_text = address.map_or_else(String::new, |a| a.to_string());
        if user.role == Role::Enumerator {
            self.record(self.draft(
                AuditEvent::AccessDenied,
                &user.username,
                &address_text,
                "/v1/auth/login",
                "điều tra viên đăng nhập phiên / an enumerator asked for a session".to_string(),
            ));
            return Err(AuthError::Forbidden(
                "điều tra viên đăng nhập trên thiết bị / enumerators sign in on their device: run `ho init --server URL --user NAME`"
                    .to_string(),
            ));
        }
        let now = self.now_ms();
        let (token, hash) = secret::new_token(TokenKind::Session)?;
        let expires_ms = now.saturating_add(self.config.session_ttl_ms);
        let mut batch = AccountsBatch::default();
        for stale in self.accounts.sessions_to_drop(None, now)? {
            batch.remove_session(&stale);
        }
        batch.put_session(
            &hash,
            &SessionRecord {
                username: user.username.clone(),
                created_ms: now,
                expires_ms,
            },
        );
        batch.audit(self.draft(
            AuditEvent::SignIn,
            &user.username,
            &address_text,
            &user.username,
            format!(
                "phiên đến {} / session until {}",
                vietnam_time(expires_ms),
                vietnam_time(expires_ms)
            ),
        ));
        self.accounts.write(batch)?;
        tracing::info!(user = %user.username, "signed in");
        Ok(SignedIn {
            token,
            expires_ms,
            user,
        })
    }

    /// Enrols a device for a user: a device token bound to both.
    pub fn enrol(
        &self,
        username: &str,
        password: &str,
        device_id: Uuid,
        address: Option<IpAddr>,
    ) -> Result<Enrolled, AuthError> {
        if device_id.is_nil() {
            return Err(AuthError::Invalid(
                "mã thiết bị trống / the device id is the nil UUID: let the field app make one"
                    .to_string(),
            ));
        }
        let user = self.verify(username, password, address, "đăng ký thiết bị / enrolment")?;
        let address_text = address.map_or_else(String::new, |a| a.to_string());
        let (token, hash) = secret::new_token(TokenKind::Device)?;
        let now = self.now_ms();
        let device = self.accounts.update(|accounts| {
            let mut batch = AccountsBatch::default();
            if let Some(existing) = accounts.device(device_id)? {
                if existing.revoked.is_some() {
                    return Err(AuthError::Forbidden(format!(
                        "thiết bị {device_id} đã bị thu hồi / device {device_id} was revoked and cannot be enrolled again: set the field app up with a new store (a new device id); the revoked device's work is kept for review"
                    )));
                }
                if existing.username != user.username {
                    return Err(AuthError::Conflict(format!(
                        "thiết bị {device_id} đã đăng ký cho người khác / device {device_id} is enrolled for another user: ask the administrator to revoke it first"
                    )));
                }
                batch.remove_device_token(&existing.token_hash);
            }
            let device = DeviceRecord {
                device_id,
                username: user.username.clone(),
                token_hash: hash,
                enrolled_ms: now,
                revoked: None,
            };
            batch.put_device(&device);
            batch.audit(self.draft(
                AuditEvent::Enrolled,
                &user.username,
                &address_text,
                &user.username,
                format!("thiết bị / device {device_id}"),
            ));
            Ok::<_, AuthError>((batch, device))
        })?;
        tracing::info!(user = %user.username, device = %device_id, "device enrolled");
        Ok(Enrolled {
            token,
            device,
            user,
        })
    }

    /// Ends a session.
    pub fn logout(&self, principal: &Principal, token: &str) -> Result<(), AuthError> {
        let mut batch = AccountsBatch::default();
        batch.remove_session(&secret::hash_token(token));
        batch.audit(self.draft(
            AuditEvent::SignOut,
            &principal.username,
            &principal.address_text(),
            &principal.username,
            String::new(),
        ));
        self.accounts.write(batch)?;
        Ok(())
    }

    /// Who a bearer token belongs to, with their role and areas as they are now.
    pub fn resolve(&self, token: &str, address: Option<IpAddr>) -> Result<Principal, AuthError> {
        let unknown = || {
            AuthError::Unauthenticated(
                "mã truy cập không hợp lệ / the access token is not valid: sign in again (supervisors) or enrol the device again with `ho init` (enumerators)"
                    .to_string(),
            )
        };
        let kind = secret::token_kind(token).ok_or_else(unknown)?;
        let hash = secret::hash_token(token);
        let (username, credential) = match kind {
            TokenKind::Device => {
                let device = self.accounts.device_by_token(&hash)?.ok_or_else(unknown)?;
                let caught_up_ms = self.accounts.caught_up(device.device_id)?;
                (
                    device.username,
                    Credential::Device {
                        id: device.device_id,
                        revoked: device.revoked.is_some(),
                        caught_up_ms,
                    },
                )
            }
            TokenKind::Session => {
                let session = self.accounts.session(&hash)?.ok_or_else(unknown)?;
                if session.expires_ms <= self.now_ms() {
                    return Err(AuthError::Unauthenticated(
                        "phiên đăng nhập đã hết hạn / the session has expired: sign in again"
                            .to_string(),
                    ));
                }
                (session.username, Credential::Session)
            }
        };
        let user = self.accounts.user(&username)?.ok_or_else(unknown)?;
        Ok(Principal {
            username: user.username,
            role: user.role,
            scope: user.scope,
            credential,
            address,
            areas: Arc::clone(&self.areas),
        })
    }

    /// Records that a device finished a pull (its last page said no more).
    pub fn caught_up(&self, device: Uuid, at_ms: i64) {
        if let Err(error) = self.accounts.set_caught_up(device, at_ms) {
            tracing::warn!(%error, %device, "recording a finished pull failed");
        }
    }

    fn within_reach(&self, actor: &Actor, scope: &Scope) -> bool {
        actor.reach.includes(scope, &self.areas)
    }

    fn manageable(&self, actor: &Actor, user: &UserRecord) -> Result<(), AuthError> {
        if self.within_reach(actor, &user.scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "tài khoản {} nằm ngoài phạm vi quản trị của bạn / the account {} is outside the areas you administer",
                user.username, user.username
            )))
        }
    }

    fn reachable_scope(&self, actor: &Actor, scope: &Scope) -> Result<(), AuthError> {
        if self.within_reach(actor, scope) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "khu vực {} nằm ngoài phạm vi quản trị của bạn / the areas {} are outside the areas you administer",
                area_texts(scope).join(", "),
                area_texts(scope).join(", ")
            )))
        }
    }

    fn existing(accounts: &Accounts, username: &str) -> Result<UserRecord, AuthError> {
        let name = username.trim().to_lowercase();
        accounts.user(&name)?.ok_or_else(|| {
            AuthError::NotFound(format!(
                "không có tài khoản '{name}' / there is no account '{name}'"
            ))
        })
    }

    /// Creates an account. Hashes the password: call it off the async threads.
    pub fn create_user(&self, actor: &Actor, new: NewUser) -> Result<UserRecord, AuthError> {
        let username = check_username(&new.username)?;
        secret::check_new_password(&new.password, &username).map_err(AuthError::Invalid)?;
        let scope = scope_for(new.role, &new.areas)?;
        self.reachable_scope(actor, &scope)?;
        let password_hash = secret::hash_password(&new.password)?;
        let now = self.now_ms();
        let user = UserRecord {
            username: username.clone(),
            role: new.role,
            scope,
            password_hash,
            created_ms: now,
            changed_ms: now,
        };
        self.accounts.update(|accounts| {
            if accounts.user(&username)?.is_some() {
                return Err(AuthError::Conflict(format!(
                    "tài khoản '{username}' đã có / the account '{username}' already exists: choose another name, or change its password or areas"
                )));
            }
            let mut batch = AccountsBatch::default();
            batch.put_user(&user);
            batch.audit(self.draft(
                AuditEvent::UserCreated,
                &actor.name,
                &actor.address,
                &username,
                format!(
                    "vai trò / role {}; khu vực / areas: {}",
                    user.role.as_str(),
                    area_texts(&user.scope).join(", ")
                ),
            ));
            Ok::<_, AuthError>((batch, ()))
        })?;
        tracing::info!(actor = %actor.name, user = %username, role = user.role.as_str(), "user created");
        Ok(user)
    }

    /// Sets a user's password and ends their sessions. Hashes the password: call it off the
    /// async threads.
    pub fn set_password(
        &self,
        actor: &Actor,
        username: &str,
        password: &str,
    ) -> Result<UserRecord, AuthError> {
        let current = Auth::existing(&self.accounts, username)?;
        self.manageable(actor, &current)?;
        secret::check_new_password(password, &current.username).map_err(AuthError::Invalid)?;
        let password_hash = secret::hash_password(password)?;
        let now = self.now_ms();
        let user =
            self.accounts.update(|accounts| {
                let mut user = Auth::existing(accounts, username)?;
                user.password_hash = password_hash;
                user.changed_ms = now;
                let mut batch = AccountsBatch::default();
                batch.put_user(&user);
                for session in accounts.sessions_to_drop(Some(&user.username), now)? {
                    batch.remove_session(&session);
                }
                batch.audit(self.draft(
                AuditEvent::PasswordChanged,
                &actor.name,
                &actor.address,
                &user.username,
                "mật khẩu mới, các phiên đăng nhập bị kết thúc / new password; sessions ended"
                    .to_string(),
            ));
                Ok::<_, AuthError>((batch, user))
            })?;
        self.throttle.succeeded(&user.username);
        tracing::info!(actor = %actor.name, user = %user.username, "password changed");
        Ok(user)
    }

    /// Adds and removes areas of a user; takes effect on the user's next request.
    pub fn change_areas(
        &self,
        actor: &Actor,
        username: &str,
        assign: &[Area],
        unassign: &[Area],
    ) -> Result<UserRecord, AuthError> {
        let now = self.now_ms();
        let user = self.accounts.update(|accounts| {
            let mut user = Auth::existing(accounts, username)?;
            self.manageable(actor, &user)?;
            let mut areas: Vec<Area> = match (&user.scope, user.role) {
                (_, Role::Administrator) => Vec::new(),
                (Scope::Villages(villages), _) => {
                    villages.iter().cloned().map(Area::Village).collect()
                }
                (Scope::Communes(communes), _) => {
                    communes.iter().cloned().map(Area::Commune).collect()
                }
                _ => Vec::new(),
            };
            if user.role == Role::Administrator && !unassign.is_empty() {
                return Err(AuthError::Invalid(
                    "quản trị viên luôn có một tỉnh hoặc toàn quốc / an administrator always has one province or everything: assign the new one instead"
                        .to_string(),
                ));
            }
            for area in unassign {
                let before = areas.len();
                areas.retain(|held| !same_area(held, area));
                if areas.len() == before {
                    return Err(AuthError::Invalid(format!(
                        "{} không có khu vực '{}' / {} is not assigned '{}'",
                        user.username,
                        area.text(),
                        user.username,
                        area.text()
                    )));
                }
            }
            areas.extend(assign.iter().cloned());
            let scope = scope_for(user.role, &areas)?;
            self.reachable_scope(actor, &scope)?;
            let before = area_texts(&user.scope).join(", ");
            user.scope = scope;
            user.changed_ms = now;
            let mut batch = AccountsBatch::default();
            batch.put_user(&user);
            batch.audit(self.draft(
                AuditEvent::AreasChanged,
                &actor.name,
                &actor.address,
                &user.username,
                format!(
                    "trước / before: [{before}]; sau / after: [{}]",
                    area_texts(&user.scope).join(", ")
                ),
            ));
            Ok::<_, AuthError>((batch, user))
        })?;
        tracing::info!(actor = %actor.name, user = %user.username, "areas changed");
        Ok(user)
    }

    /// Changes a user's role, with the areas of the new role.
    pub fn set_role(
        &self,
        actor: &Actor,
        username: &str,
        role: Role,
        areas: &[Area],
    ) -> Result<UserRecord, AuthError> {
        let scope = scope_for(role, areas)?;
        self.reachable_scope(actor, &scope)?;
        let now = self.now_ms();
        let user = self.accounts.update(|accounts| {
            let mut user = Auth::existing(accounts, username)?;
            self.manageable(actor, &user)?;
            if user.username == actor.name {
                return Err(AuthError::Forbidden(
                    "không tự đổi vai trò của mình / you cannot change your own role: ask another administrator"
                        .to_string(),
                ));
            }
            let before = format!(
                "{} [{}]",
                user.role.as_str(),
                area_texts(&user.scope).join(", ")
            );
            user.role = role;
            user.scope = scope;
            user.changed_ms = now;
            let mut batch = AccountsBatch::default();
            batch.put_user(&user);
            if role == Role::Enumerator {
                for session in accounts.sessions_to_drop(Some(&user.username), now)? {
                    batch.remove_session(&session);
                }
            }
            batch.audit(self.draft(
                AuditEvent::RoleChanged,
                &actor.name,
                &actor.address,
                &user.username,
                format!(
                    "trước / before: {before}; sau / after: {} [{}]",
                    user.role.as_str(),
                    area_texts(&user.scope).join(", ")
                ),
            ));
            Ok::<_, AuthError>((batch, user))
        })?;
        tracing::info!(actor = %actor.name, user = %user.username, role = role.as_str(), "role changed");
        Ok(user)
    }

    /// Revokes a device: its token stays known so that its next push is kept for review, but
    /// it gets no data and no write is applied.
    pub fn revoke_device(&self, actor: &Actor, device_id: Uuid) -> Result<DeviceRecord, AuthError> {
        let now = self.now_ms();
        let device = self.accounts.update(|accounts| {
            let mut device = accounts.device(device_id)?.ok_or_else(|| {
                AuthError::NotFound(format!(
                    "không có thiết bị {device_id} / there is no enrolled device {device_id}"
                ))
            })?;
            if let Some(user) = accounts.user(&device.username)? {
                self.manageable(actor, &user)?;
            } else if actor.reach != Scope::Everything {
                return Err(AuthError::Forbidden(format!(
                    "thiết bị {device_id} nằm ngoài phạm vi quản trị của bạn / device {device_id} is outside the areas you administer"
                )));
            }
            let mut batch = AccountsBatch::default();
            if device.revoked.is_none() {
                device.revoked = Some(Revocation {
                    at_ms: now,
                    by: actor.name.clone(),
                });
                batch.put_device(&device);
                batch.audit(self.draft(
                    AuditEvent::DeviceRevoked,
                    &actor.name,
                    &actor.address,
                    &device.username,
                    format!("thiết bị / device {device_id}"),
                ));
            }
            Ok::<_, AuthError>((batch, device))
        })?;
        tracing::info!(actor = %actor.name, device = %device_id, "device revoked");
        Ok(device)
    }

    /// The users the actor administers, by name.
    pub fn users(&self, actor: &Actor) -> Result<Vec<UserRecord>, AuthError> {
        Ok(self
            .accounts
            .users()?
            .into_iter()
            .filter(|user| self.within_reach(actor, &user.scope))
            .collect())
    }

    /// The devices of the users the actor administers, by id.
    pub fn devices(&self, actor: &Actor) -> Result<Vec<DeviceRecord>, AuthError> {
        let users = self.users(actor)?;
        Ok(self
            .accounts
            .devices()?
            .into_iter()
            .filter(|device| {
                actor.reach == Scope::Everything
                    || users.iter().any(|user| user.username == device.username)
            })
            .collect())
    }

    /// Audit entries after `after`, oldest first: all of them for an administrator of
    /// everything, those naming a user they administer for an administrator of a province.
    pub fn audit(
        &self,
        actor: &Actor,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, AuthError> {
        if actor.reach == Scope::Everything {
            return Ok(self.accounts.audit_after(after, limit)?);
        }
        let users: Vec<String> = self
            .users(actor)?
            .into_iter()
            .filter(|user| !user.scope.is_empty())
            .map(|user| user.username)
            .collect();
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            let page = self.accounts.audit_after(cursor, 1_000)?;
            let Some(last) = page.last() else { break };
            cursor = last.id;
            out.extend(page.into_iter().filter(|entry| {
                users.contains(&entry.entry.actor) || users.contains(&entry.entry.subject)
            }));
        }
        out.truncate(limit);
        Ok(out)
    }
}

fn same_area(a: &Area, b: &Area) -> bool {
    match (a, b) {
        (Area::Village(a), Area::Village(b)) => {
            a.commune_code == b.commune_code && same_village(&a.name, &b.name)
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests;
