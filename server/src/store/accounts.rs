//! Accounts, enrolled devices, sessions and the audit log: the `accounts` tree, beside the
//! registry's tree in the same sled database.
//!
//! A tree of its own keeps account rows out of the registry's key space and out of anything
//! that rebuilds or scans the registry. Every write is one atomic batch on this tree and one
//! flush, made under a lock so that "create if absent" and the audit log's ids hold under
//! concurrent requests. Nothing secret is stored in the clear: passwords as Argon2id PHC
//! strings, tokens as their BLAKE2b-256 hashes.
//!
//! | prefix | rest of the key       | value                                              |
//! |--------|-----------------------|----------------------------------------------------|
//! | `u`    | user name (UTF-8)     | user row: role, areas, password hash, times        |
//! | `e`    | device id (16)        | device row: user, token hash, enrolled, revoked    |
//! | `k`    | token hash (32)       | device id (16): device tokens by hash              |
//! | `s`    | token hash (32)       | session row: user, created, expires                |
//! | `a`    | audit id (u64)        | audit row                                          |
//! | `p`    | device id (16)        | when the device last finished a pull (i64 ms)      |

use std::sync::Mutex;

use protocol::access::Scope;
use uuid::Uuid;

use super::rows::{RowError, RowReader, RowWriter};
use super::{Registry, StoreError};
use crate::scope::Role;

const USER: u8 = b'u';
const DEVICE: u8 = b'e';
const DEVICE_TOKEN: u8 = b'k';
const SESSION: u8 = b's';
const AUDIT: u8 = b'a';
const CAUGHT_UP: u8 = b'p';

/// The hash of a bearer token, the only form in which a token is stored.
pub type TokenHash = [u8; 32];

/// A user account.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Lower-case ASCII, checked by `auth` before it is stored.
    pub username: String,
    pub role: Role,
    /// The areas the user works in; its kind follows the role.
    pub scope: Scope,
    /// The Argon2id PHC string.
    pub password_hash: String,
    pub created_ms: i64,
    /// The last change of role, areas or password.
    pub changed_ms: i64,
}

impl std::fmt::Debug for UserRecord {
    // The password hash stays out of debug output and so out of any log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why and by whom a device was revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub at_ms: i64,
    pub by: String,
}

/// A device enrolled against a user.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: Uuid,
    pub username: String,
    /// The hash of the device's current token.
    pub token_hash: TokenHash,
    pub enrolled_ms: i64,
    pub revoked: Option<Revocation>,
}

impl std::fmt::Debug for DeviceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRecord")
            .field("device_id", &self.device_id)
            .field("username", &self.username)
            .field("enrolled_ms", &self.enrolled_ms)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// A signed-in supervisor's or administrator's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub username: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// What an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditEvent {
    SignIn,
    SignInFailed,
    /// An account or an address reached the limit of failed sign-ins and is locked.
    Locked,
    SignOut,
    Enrolled,
    DeviceRevoked,
    /// A revoked device pushed; its mutations were kept for review.
    RevokedDevicePushed,
    UserCreated,
    PasswordChanged,
    RoleChanged,
    AreasChanged,
    /// A request reached for something outside the caller's rights or areas.
    AccessDenied,
}

impl AuditEvent {
    const ALL: [AuditEvent; 12] = [
        AuditEvent::SignIn,
        AuditEvent::SignInFailed,
        AuditEvent::Locked,
        AuditEvent::SignOut,
        AuditEvent::Enrolled,
        AuditEvent::DeviceRevoked,
        AuditEvent::RevokedDevicePushed,
        AuditEvent::UserCreated,
        AuditEvent::PasswordChanged,
        AuditEvent::RoleChanged,
        AuditEvent::AreasChanged,
        AuditEvent::AccessDenied,
    ];

    /// The name in the JSON API and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::SignIn => "sign_in",
            AuditEvent::SignInFailed => "sign_in_failed",
            AuditEvent::Locked => "locked",
            AuditEvent::SignOut => "sign_out",
            AuditEvent::Enrolled => "enrolled",
            AuditEvent::DeviceRevoked => "device_revoked",
            AuditEvent::RevokedDevicePushed => "revoked_device_pushed",
            AuditEvent::UserCreated => "user_created",
            AuditEvent::PasswordChanged => "password_changed",
            AuditEvent::RoleChanged => "role_changed",
            AuditEvent::AreasChanged => "areas_changed",
            AuditEvent::AccessDenied => "access_denied",
        }
    }

    fn tag(self) -> u8 {
        match self {
            AuditEvent::SignIn => 1,
            AuditEvent::SignInFailed => 2,
            AuditEvent::Locked => 3,
            AuditEvent::SignOut => 4,
            AuditEvent::Enrolled => 5,
            AuditEvent::DeviceRevoked => 6,
            AuditEvent::RevokedDevicePushed => 7,
            AuditEvent::UserCreated => 8,
            AuditEvent::PasswordChanged => 9,
            AuditEvent::RoleChanged => 10,
            AuditEvent::AreasChanged => 11,
            AuditEvent::AccessDenied => 12,
        }
    }

    fn of(tag: u8) -> Result<AuditEvent, RowError> {
        AuditEvent::ALL
            .into_iter()
            .find(|event| event.tag() == tag)
            .ok_or(RowError::Tag {
                what: "an audit event",
                tag,
            })
    }
}

/// An audit entry to record; the store gives it its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraft {
    pub at_ms: i64,
    pub event: AuditEvent,
    /// Who acted: a user name, or empty when nobody signed in (a failed sign-in under an
    /// unknown name names it in `subject`).
    pub actor: String,
    /// Where the request came from (an IP address), or `command line`.
    pub address: String,
    /// What the event is about: a user name, a device id, a household id, a route.
    pub subject: String,
    /// A sentence for people. Never a password or a token.
    pub detail: String,
}

/// A recorded audit entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Ascending, from 1.
    pub id: u64,
    pub entry: AuditDraft,
}

/// One atomic write to the accounts tree.
#[derive(Debug, Default)]
pub struct AccountsBatch {
    puts: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    audit: Vec<AuditDraft>,
}

impl AccountsBatch {
    pub fn put_user(&mut self, user: &UserRecord) {
        self.puts
            .push((key(USER, user.username.as_bytes()), Some(encode_user(user))));
    }

    pub fn put_device(&mut self, device: &DeviceRecord) {
        self.puts.push((
            key(DEVICE, device.device_id.as_bytes()),
            Some(encode_device(device)),
        ));
        self.puts.push((
            key(DEVICE_TOKEN, &device.token_hash),
            Some(device.device_id.as_bytes().to_vec()),
        ));
    }

    /// Forgets a device token (a device enrolled again gets a new one).
    pub fn remove_device_token(&mut self, hash: &TokenHash) {
        self.puts.push((key(DEVICE_TOKEN, hash), None));
    }

    pub fn put_session(&mut self, hash: &TokenHash, session: &SessionRecord) {
        self.puts
            .push((key(SESSION, hash), Some(encode_session(session))));
    }

    pub fn remove_session(&mut self, hash: &TokenHash) {
        self.puts.push((key(SESSION, hash), None));
    }

    pub fn audit(&mut self, draft: AuditDraft) {
        self.audit.push(draft);
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.audit.is_empty()
    }
}

/// The accounts tree.
pub struct Accounts {
    db: sled::Db,
    tree: sled::Tree,
    /// Held for every write; holds the last audit id handed out.
    writer: Mutex<u64>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + rest.len());
    out.push(prefix);
    out.extend_from_slice(rest);
    out
}

fn show(key: &[u8]) -> String {
    match key.split_first() {
        None => "accounts:(empty key)".to_string(),
        Some((prefix, rest)) => {
            let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
            format!("accounts:{}:{hex}", char::from(*prefix))
        }
    }
}

fn corrupt(key: &[u8]) -> impl FnOnce(RowError) -> StoreError + '_ {
    move |source| StoreError::Corrupt {
        key: show(key),
        problem: source,
    }
}

impl Accounts {
    /// Opens the accounts tree of the registry's database.
    pub fn open(registry: &Registry) -> Result<Accounts, StoreError> {
        let db = registry.db.clone();
        let tree = db.open_tree("accounts")?;
        let last_audit = match tree.scan_prefix([AUDIT]).next_back() {
            None => 0,
            Some(entry) => {
                let (key, _) = entry?;
                audit_id(&key)?
            }
        };
        Ok(Accounts {
            db,
            tree,
            writer: Mutex::new(last_audit),
        })
    }

    /// Applies a batch atomically and flushes it; returns the ids given to its audit entries.
    pub fn write(&self, batch: AccountsBatch) -> Result<Vec<u64>, StoreError> {
        let mut last = self.lock();
        self.apply(&mut last, batch)
    }

    /// Runs `decide` under the write lock, with the current state readable, and writes the
    /// batch it returns: "create if absent" and read-modify-write without a race.
    pub fn update<T, E: From<StoreError>>(
        &self,
        decide: impl FnOnce(&Accounts) -> Result<(AccountsBatch, T), E>,
    ) -> Result<T, E> {
        let mut last = self.lock();
        let (batch, value) = decide(self)?;
        self.apply(&mut last, batch)?;
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // Every write is all-or-nothing in sled, so a lock poisoned by a panic elsewhere is
        // still sound to use.
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply(&self, last: &mut u64, batch: AccountsBatch) -> Result<Vec<u64>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.puts {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        let mut ids = Vec::with_capacity(batch.audit.len());
        let mut next = *last;
        for draft in &batch.audit {
            next += 1;
            sled_batch.insert(key(AUDIT, &next.to_be_bytes()), encode_audit(draft));
            ids.push(next);
        }
        self.tree.apply_batch(sled_batch)?;
        self.db.flush().map_err(StoreError::Flush)?;
        *last = next;
        Ok(ids)
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.tree.get(key)?)
    }

    pub fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let key = key(USER, username.as_bytes());
        self.get(&key)?
            .map(|row| decode_user(username, &row).map_err(corrupt(&key)))
            .transpose()
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix([USER]) {
            let (key, row) = entry?;
            let name = std::str::from_utf8(&key[1..])
                .map_err(|_| corrupt(&key)(RowError::Utf8))?
                .to_string();
            out.push(decode_user(&name, &row).map_err(corrupt(&key))?);
        }
        Ok(out)
    }

    pub fn device(&self, device_id: Uuid) -> Result<Option<DeviceRecord>, StoreError> {
        let key = key(DEVICE, device_id.as_bytes());
        self.get(&key)?
            .map(|row| decode_device(device_id, &row).map_err(corrupt(&key)))
            .transpose()
    }

    /// Every enrolled device, revoked ones included, by id.
    pub fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix([DEVICE]) {
            let (key, row) = entry?;
            let bytes: [u8; 16] = key[1..]
                .try_into()
                .map_err(|_| corrupt(&key)(RowError::Truncated))?;
            out.push(decode_device(Uuid::from_bytes(bytes), &row).map_err(corrupt(&key))?);
        }
        Ok(out)
    }

    /// The device a token was issued to, if the token is still that device's.
    pub fn device_by_token(&self, hash: &TokenHash) -> Result<Option<DeviceRecord>, StoreError> {
        let key = key(DEVICE_TOKEN, hash);
        let Some(id) = self.get(&key)? else {
            return Ok(None);
        };
        let bytes: [u8; 16] = id[..]
            .try_into()
            .map_err(|_| corrupt(&key)(RowError::Truncated))?;
        Ok(self
            .device(Uuid::from_bytes(bytes))?
            .filter(|device| device.token_hash == *hash))
    }

    pub fn session(&self, hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        let key = key(SESSION, hash);
        self.get(&key)?
            .map(|row| decode_session(&row).map_err(corrupt(&key)))
            .transpose()
    }

    /// The hashes of the sessions of `username`, and of every session expired at `now_ms`.
    pub fn sessions_to_drop(
        &self,
        username: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix([SESSION]) {
            let (key, row) = entry?;
            let session = decode_session(&row).map_err(corrupt(&key))?;
            if session.expires_ms <= now_ms || Some(session.username.as_str()) == username {
                let hash: TokenHash = key[1..]
                    .try_into()
                    .map_err(|_| corrupt(&key)(RowError::Truncated))?;
                out.push(hash);
            }
        }
        Ok(out)
    }

    /// Audit entries with an id above `after`, oldest first, at most `limit`.
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let range = key(AUDIT, &from.to_be_bytes())..=key(AUDIT, &u64::MAX.to_be_bytes());
        let mut out = Vec::new();
        for entry in self.tree.range(range) {
            if out.len() >= limit {
                break;
            }
            let (key, row) = entry?;
            let id = audit_id(&key)?;
            out.push(AuditEntry {
                id,
                entry: decode_audit(&row).map_err(corrupt(&key))?,
            });
        }
        Ok(out)
    }

    /// When the device last finished a pull (its last page said no more), on the server's
    /// clock.
    pub fn caught_up(&self, device_id: Uuid) -> Result<Option<i64>, StoreError> {
        let key = key(CAUGHT_UP, device_id.as_bytes());
        self.get(&key)?
            .map(|row| {
                let bytes: [u8; 8] = row[..]
                    .try_into()
                    .map_err(|_| corrupt(&key)(RowError::Truncated))?;
                Ok(i64::from_be_bytes(bytes))
            })
            .transpose()
    }

    /// Records when the device finished a pull. Not flushed on its own: it is a hint that
    /// bounds work (a lost one only makes the next pull look further back), and the next
    /// flush of the database carries it.
    pub fn set_caught_up(&self, device_id: Uuid, at_ms: i64) -> Result<(), StoreError> {
        self.tree.insert(
            key(CAUGHT_UP, device_id.as_bytes()),
            &at_ms.to_be_bytes()[..],
        )?;
        Ok(())
    }
}

fn audit_id(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(key)(RowError::Truncated))?;
    Ok(u64::from_be_bytes(bytes))
}

fn role_tag(role: Role) -> u8 {
    match role {
        Role::Enumerator => 1,
        Role::Supervisor => 2,
        Role::Administrator => 3,
    }
}

fn role_of(tag: u8) -> Result<Role, RowError> {
    Ok(match tag {
        1 => Role::Enumerator,
        2 => Role::Supervisor,
        3 => Role::Administrator,
        tag => {
            return Err(RowError::Tag {
                what: "a role",
                tag,
            })
        }
    })
}

fn encode_user(user: &UserRecord) -> Vec<u8> {
    RowWriter::new()
        .u8(role_tag(user.role))
        .i64(user.created_ms)
        .i64(user.changed_ms)
        .blob(user.password_hash.as_bytes())
        .protocol(&user.scope)
        .finish()
}

fn decode_user(username: &str, row: &[u8]) -> Result<UserRecord, RowError> {
    let mut reader = RowReader::new(row)?;
    let role = role_of(reader.u8()?)?;
    let created_ms = reader.i64()?;
    let changed_ms = reader.i64()?;
    let password_hash = reader.text()?;
    let scope = reader.protocol()?;
    reader.finish()?;
    Ok(UserRecord {
        username: username.to_string(),
        role,
        scope,
        password_hash,
        created_ms,
        changed_ms,
    })
}

fn encode_device(device: &DeviceRecord) -> Vec<u8> {
    let row = RowWriter::new()
        .blob(device.username.as_bytes())
        .blob(&device.token_hash)
        .i64(device.enrolled_ms);
    match &device.revoked {
        None => row.u8(0),
        Some(revocation) => row
            .u8(1)
            .i64(revocation.at_ms)
            .blob(revocation.by.as_bytes()),
    }
    .finish()
}

fn decode_device(device_id: Uuid, row: &[u8]) -> Result<DeviceRecord, RowError> {
    let mut reader = RowReader::new(row)?;
    let username = reader.text()?;
    let token_hash: TokenHash = reader.blob()?.try_into().map_err(|_| RowError::Truncated)?;
    let enrolled_ms = reader.i64()?;
    let revoked = match reader.u8()? {
        0 => None,
        1 => Some(Revocation {
            at_ms: reader.i64()?,
            by: reader.text()?,
        }),
        tag => {
            return Err(RowError::Tag {
                what: "a device's revocation",
                tag,
            })
        }
    };
    reader.finish()?;
    Ok(DeviceRecord {
        device_id,
        username,
        token_hash,
        enrolled_ms,
        revoked,
    })
}

fn encode_session(session: &SessionRecord) -> Vec<u8> {
    RowWriter::new()
        .blob(session.username.as_bytes())
        .i64(session.created_ms)
        .i64(session.expires_ms)
        .finish()
}

fn decode_session(row: &[u8]) -> Result<SessionRecord, RowError> {
    let mut reader = RowReader::new(row)?;
    let username = reader.text()?;
    let created_ms = reader.i64()?;
    let expires_ms = reader.i64()?;
    reader.finish()?;
    Ok(SessionRecord {
        username,
        created_ms,
        expires_ms,
    })
}

fn encode_audit(draft: &AuditDraft) -> Vec<u8> {
    RowWriter::new()
        .i64(draft.at_ms)
        .u8(draft.event.tag())
        .blob(draft.actor.as_bytes())
        .blob(draft.address.as_bytes())
        .blob(draft.subject.as_bytes())
        .blob(draft.detail.as_bytes())
        .finish()
}

fn decode_audit(row: &[u8]) -> Result<AuditDraft, RowError> {
    let mut reader = RowReader::new(row)?;
    let at_ms = reader.i64()?;
    let event = AuditEvent::of(reader.u8()?)?;
    let actor = reader.text()?;
    let address = reader.text()?;
    let subject = reader.text()?;
    let detail = reader.text()?;
    reader.finish()?;
    Ok(AuditDraft {
        at_ms,
        event,
        actor,
        address,
        subject,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::areas::Village;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(dir.path()).expect("open");
        (dir, registry)
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            username: name.to_string(),
            role: Role::Enumerator,
            scope: Scope::Villages(vec![Village {
                commune_code: "00004".into(),
                name: "Thôn Đông".into(),
            }]),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            created_ms: 1,
            changed_ms: 2,
        }
    }

    fn draft(event: AuditEvent) -> AuditDraft {
        AuditDraft {
            at_ms: 5,
            event,
            actor: "admin".into(),
            address: "127.0.0.1".into(),
            subject: "lan".into(),
            detail: "chi tiết / detail".into(),
        }
    }

    #[test]
    fn rows_round_trip_and_audit_ids_continue_after_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let device = DeviceRecord {
            device_id: Uuid::from_u128(7),
            username: "lan".into(),
            token_hash: [9; 32],
            enrolled_ms: 3,
            revoked: None,
        };
        {
            let registry = Registry::open(dir.path()).expect("open");
            let accounts = Accounts::open(&registry).expect("accounts");
            let mut batch = AccountsBatch::default();
            batch.put_user(&user("lan"));
            batch.put_device(&device);
            batch.put_session(
                &[1; 32],
                &SessionRecord {
                    username: "lan".into(),
                    created_ms: 1,
                    expires_ms: 10,
                },
            );
            batch.audit(draft(AuditEvent::UserCreated));
            batch.audit(draft(AuditEvent::Enrolled));
            assert_eq!(accounts.write(batch).expect("write"), vec![1, 2]);
        }
        let registry = super::super::journaled::tests::open(dir.path()).expect("reopen");
        let accounts = Accounts::open(&registry).expect("accounts");
        assert_eq!(accounts.user("lan").expect("read"), Some(user("lan")));
        assert_eq!(accounts.users().expect("read").len(), 1);
        assert_eq!(
            accounts.device_by_token(&[9; 32]).expect("read"),
            Some(device.clone())
        );
        assert_eq!(accounts.device_by_token(&[8; 32]).expect("read"), None);
        assert_eq!(
            accounts.sessions_to_drop(None, 11).expect("scan"),
            vec![[1; 32]]
        );
        assert!(accounts.sessions_to_drop(None, 9).expect("scan").is_empty());
        let mut batch = AccountsBatch::default();
        batch.audit(draft(AuditEvent::AccessDenied));
        assert_eq!(accounts.write(batch).expect("write"), vec![3]);
        let entries = accounts.audit_after(1, 10).expect("audit");
        assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(entries[1].entry, draft(AuditEvent::AccessDenied));
        assert!(!format!("{:?}", user("lan")).contains("argon2"));
    }

    #[test]
    fn a_revoked_device_keeps_its_token_hash_and_damaged_rows_are_errors() {
        let (_dir, registry) = registry();
        let accounts = Accounts::open(&registry).expect("accounts");
        let device = DeviceRecord {
            device_id: Uuid::from_u128(1),
            username: "lan".into(),
            token_hash: [3; 32],
            enrolled_ms: 3,
            revoked: Some(Revocation {
                at_ms: 4,
                by: "admin".into(),
            }),
        };
        let row = encode_device(&device);
        assert_eq!(decode_device(device.device_id, &row).ok(), Some(device));
        for cut in 0..row.len() {
            assert!(decode_device(Uuid::nil(), &row[..cut]).is_err());
        }
        assert!(accounts.caught_up(Uuid::nil()).expect("read").is_none());
        accounts.set_caught_up(Uuid::nil(), 42).expect("write");
        assert_eq!(accounts.caught_up(Uuid::nil()).expect("read"), Some(42));
    }
}
