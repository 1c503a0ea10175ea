//! The device's enrolment and what it may hold: the device token, the user, the user's areas
//! as of the last pull page, and the households that left them.
//!
//! The token is kept in the store's meta rows and never shown: [`Store::device_token`] is for
//! the transport only. The areas come with every pull page (`PullResponse::scope`); when they
//! change, [`after_page`] drops the households the device holds outside them, and when they
//! grow, it sets the cursor back to 0 so that the sync pulls what the user may now see. A
//! household the server says left the areas (`PullResponse::left_scope`) is dropped the same
//! way. "Dropped" never loses the enumerator's work: a household with changes the server has
//! not settled yet stays, marked out of scope (`S`), until they are; a rejected change keeps
//! its full payload in its rejection row.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use protocol::access::Scope;
use protocol::areas::AreaRegistry;
use protocol::fields::{FieldMap, FieldValue};
use protocol::sync::PullResponse;
use uuid::Uuid;

use super::rows::{ConflictRow, HouseholdRow};
use super::{keys, Store, StoreError, Txn};

/// Who the device is enrolled for.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub user: String,
    /// The bearer token; never printed.
    pub token: String,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What a page's areas did to the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScopeEffects {
    /// Households removed from the device.
    pub dropped: usize,
    /// The areas grew: the cursor went back to 0 and the sync pulls again.
    pub restart: bool,
}

/// The code set that says which province a commune is in.
fn areas() -> Option<&'static AreaRegistry> {
    static AREAS: OnceLock<Option<AreaRegistry>> = OnceLock::new();
    AREAS.get_or_init(|| AreaRegistry::embedded().ok()).as_ref()
}

fn text<'a>(fields: &'a FieldMap, path: &str) -> Option<&'a str> {
    match fields.get(path) {
        Some(FieldValue::Text(text)) => Some(text),
        _ => None,
    }
}

fn holds(scope: &Scope, fields: &FieldMap) -> bool {
    match areas() {
        Some(areas) => scope.contains(text(fields, "commune_code"), text(fields, "village"), areas),
        // Without the code set nothing is dropped: keeping too much beats losing work.
        None => true,
    }
}

fn decode_text(bytes: Vec<u8>, what: &'static str) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
        what,
        problem: "not UTF-8".into(),
    })
}

impl Store {
    /// Records the device's enrolment: the user and the device token the server issued.
    pub fn set_enrolment(&self, enrolment: &Enrolment) -> Result<(), StoreError> {
        let mut txn = self.begin();
        txn.put(
            keys::meta(keys::META_USER),
            enrolment.user.as_bytes().to_vec(),
        );
        txn.put(
            keys::meta(keys::META_DEVICE_TOKEN),
            enrolment.token.as_bytes().to_vec(),
        );
        txn.commit()
    }

    /// The device's enrolment, once `ho init` has enrolled it.
    pub fn enrolment(&self) -> Result<Option<Enrolment>, StoreError> {
        let read = self.read();
        let user = read.get(&keys::meta(keys::META_USER))?;
        let token = read.get(&keys::meta(keys::META_DEVICE_TOKEN))?;
        match (user, token) {
            (Some(user), Some(token)) => Ok(Some(Enrolment {
                user: decode_text(user, "user")?,
                token: decode_text(token, "device token")?,
            })),
            _ => Ok(None),
        }
    }

    /// The user's areas as of the last pull page.
    pub fn scope(&self) -> Result<Option<Scope>, StoreError> {
        self.read()
            .get(&keys::meta(keys::META_SCOPE))?
            .map(|bytes| decode_scope(&bytes))
            .transpose()
    }

    /// Households kept on the device although they left the user's areas, because they hold
    /// the enumerator's unsynced or rejected work.
    pub(crate) fn out_of_scope(&self) -> Result<BTreeSet<Uuid>, StoreError> {
        let mut out = BTreeSet::new();
        for item in self.inner.db.scan_prefix([keys::OUT_OF_SCOPE]) {
            let (key, _) = item?;
            if let Some(id) = keys::household_of(&key) {
                out.insert(id);
            }
        }
        Ok(out)
    }
}

fn decode_scope(bytes: &[u8]) -> Result<Scope, StoreError> {
    protocol::codec::decode(bytes, bytes.len()).map_err(|error| StoreError::Corrupt {
        what: "scope",
        problem: error.to_string(),
    })
}

/// Does the household hold work of the enumerator's that the server has not settled: changes
/// not yet pushed, or pushed without an outcome yet, or a record the registry never took (a
/// create it rejected: all of it is the enumerator's, to correct and save again)? Otherwise a
/// change with an outcome is settled: applied, it is in the registry; rejected, it keeps its
/// whole payload in its own row (`R`), shown by `ho rejected`; and the household's data, the
/// registry's, can go.
fn holds_own_work(row: &HouseholdRow) -> bool {
    row.server.is_none()
        || row.meta.latest_pending.is_some()
        || row.meta.unconfirmed.iter().any(|e| e.result_rev.is_none())
}

/// Drops a household the user may no longer hold, or marks it out of scope while it holds
/// the enumerator's work. Returns whether it was removed.
fn drop_household(
    txn: &mut Txn<'_>,
    id: Uuid,
    conflicts: &[(Vec<u8>, Uuid)],
) -> Result<bool, StoreError> {
    let Some(row) = txn.household(id)? else {
        txn.remove(keys::out_of_scope(id));
        return Ok(false);
    };
    if holds_own_work(&row) {
        txn.put(keys::out_of_scope(id), Vec::new());
        return Ok(false);
    }
    txn.remove(keys::household(id));
    txn.remove(keys::out_of_scope(id));
    for (key, household) in conflicts {
        if *household == id {
            txn.remove(key.clone());
        }
    }
    Ok(true)
}

/// Applies a pull page's areas and `left_scope` to the store, inside the page's write: see the
/// module docs. Runs after the page's changes are staged.
pub(crate) fn after_page(
    txn: &mut Txn<'_>,
    page: &PullResponse,
) -> Result<ScopeEffects, StoreError> {
    let mut effects = ScopeEffects::default();
    // Households in this page are inside the areas again.
    for change in &page.changes {
        txn.remove(keys::out_of_scope(change.household_id));
    }
    let previous = txn
        .get(&keys::meta(keys::META_SCOPE))?
        .map(|bytes| decode_scope(&bytes))
        .transpose()?;
    let changed = previous.as_ref() != Some(&page.scope);
    let marked: Vec<Uuid> = txn
        .scan_committed(keys::OUT_OF_SCOPE)
        .map(|item| item.map(|(key, _)| keys::household_of(&key)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .filter(|id| !page.changes.iter().any(|c| c.household_id == *id))
        .collect();
    if page.left_scope.is_empty() && !changed && marked.is_empty() {
        return Ok(effects);
    }
    let conflicts: Vec<(Vec<u8>, Uuid)> = txn
        .scan_committed(keys::CONFLICT)
        .map(|item| {
            let (key, value) = item?;
            Ok((key, ConflictRow::decode(&value)?.household_id))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut leaving: BTreeSet<Uuid> = page.left_scope.iter().copied().collect();
    leaving.extend(marked);
    // Areas that cover everything hold every household: no row needs reading (with 10,000
    // households held, reading them all was a fifth of a first pull).
    if changed && page.scope != Scope::Everything {
        let held: Vec<Uuid> = txn
            .scan_committed(keys::HOUSEHOLD)
            .map(|item| item.map(|(key, _)| keys::household_of(&key)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        for id in held {
            if let Some(row) = txn.household(id)? {
                if !holds(&page.scope, row.view()) {
                    leaving.insert(id);
                }
            }
        }
    }
    if changed {
        txn.put(
            keys::meta(keys::META_SCOPE),
            protocol::codec::encode(&page.scope),
        );
        effects.restart = previous
            .as_ref()
            .is_some_and(|before| areas().is_none_or(|areas| !before.includes(&page.scope, areas)));
    }
    for id in leaving {
        if drop_household(txn, id, &conflicts)? {
            effects.dropped += 1;
        }
    }
    Ok(effects)
}

#[cfg(test)]
mod tests {
    use protocol::access::Scope;
    use protocol::areas::Village;

    use crate::store::Store;
    use crate::test_support::{run, sample, store, FakeServer};

    fn villages(names: &[&str]) -> Scope {
        Scope::Villages(
            names
                .iter()
                .map(|name| Village {
                    commune_code: "00004".into(),
                    name: (*name).into(),
                })
                .collect(),
        )
    }

    fn in_village(n: u128, village: &str) -> protocol::household::Household {
        let mut household = sample(n);
        village.clone_into(&mut household.village);
        household
    }

    fn ids(store: &Store) -> Vec<uuid::Uuid> {
        store
            .households()
            .expect("households")
            .into_iter()
            .map(|h| h.id)
            .collect()
    }

    #[test]
    fn a_reassignment_drops_what_left_and_pulls_what_came_keeping_unsynced_work() {
        let (_dir, device) = store();
        let mut server = FakeServer::default();
        // Another device recorded three households, one per village.
        let other_dir = tempfile::tempdir().expect("temp dir");
        let other = Store::open(other_dir.path()).expect("open");
        other
            .setup("http://127.0.0.1:1", uuid::Uuid::from_u128(0x07e4))
            .expect("setup");
        for (n, village) in [(1, "Thôn Đông"), (2, "Thôn Tây"), (3, "Thôn Bắc")] {
            other.save_household(&in_village(n, village)).expect("save");
        }
        server.scope = None;
        run(&other, &mut server).expect("other syncs");
        server.scope = Some(villages(&["Thôn Đông", "Thôn Tây"]));
        run(&device, &mut server).expect("sync");
        assert_eq!(ids(&device), vec![sample(1).id, sample(2).id]);
        assert_eq!(device.scope().expect("scope"), server.scope);

        // Offline, the enumerator edits the household of Thôn Tây; then Thôn Tây is taken
        // away and Thôn Bắc given.
        let mut edited = in_village(2, "Thôn Tây");
        edited.address = "Số 99".into();
        device.save_household(&edited).expect("save");
        server.scope = Some(villages(&["Thôn Đông", "Thôn Bắc"]));
        let sent = server.pushes;
        let report = run(&device, &mut server).expect("sync");
        assert_eq!(server.pushes, sent + 1, "the unsynced edit was pushed");
        assert!(report.areas_grew);
        let held = ids(&device);
        assert!(held.contains(&sample(1).id));
        assert!(
            held.contains(&sample(3).id),
            "Thôn Bắc was pulled from the start"
        );
        assert!(
            !held.contains(&sample(2).id),
            "Thôn Tây left once its edit was settled"
        );
        assert_eq!(report.left_scope, 1);
    }

    #[test]
    fn a_household_with_pending_work_stays_marked_until_it_is_settled() {
        let (_dir, device) = store();
        let mut server = FakeServer::default();
        device
            .save_household(&in_village(1, "Thôn Đông"))
            .expect("save");
        run(&device, &mut server).expect("sync");
        let mut edited = in_village(1, "Thôn Đông");
        edited.address = "Số 5".into();
        device.save_household(&edited).expect("save offline");

        // A page that says the household left, before the edit is pushed.
        let mut txn = device.begin();
        let page = protocol::sync::PullResponse {
            changes: vec![],
            next_cursor: device.cursor().expect("cursor"),
            more: false,
            outcomes: vec![],
            left_scope: vec![sample(1).id],
            scope: villages(&["Thôn Tây"]),
        };
        let effects = super::after_page(&mut txn, &page).expect("apply");
        txn.commit().expect("commit");
        assert_eq!(effects.dropped, 0);
        let kept = device.household(sample(1).id).expect("read").expect("kept");
        assert!(kept.out_of_scope && kept.pending);
        assert_eq!(kept.household().expect("view").address, "Số 5");
        assert_eq!(device.pending().expect("outbox").len(), 1);
    }
}
