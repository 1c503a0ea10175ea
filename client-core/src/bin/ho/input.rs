//! Reading what the enumerator gives: dates, household JSON files, ids typed in part.

use std::io::Read;
use std::path::Path;

use client_core::store::{LocalHousehold, Store};
use protocol::household::{Date, Household};
use serde_json::Value;
use uuid::Uuid;

use crate::Fail;

/// Largest household JSON file accepted.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A date written `YYYY-MM-DD`, for clap.
pub fn parse_date(text: &str) -> Result<Date, String> {
    text.trim()
        .parse()
        .map_err(|problem| format!("ngày không hợp lệ / invalid date: {problem}"))
}

/// Reads a household from a JSON file, making UUIDv7 ids where the file has none (the
/// household's, unless `id` is given; each member's) and naming the head when exactly one
/// member has the relationship "head".
pub fn read_household_file(path: &Path, id: Option<Uuid>) -> Result<Household, Fail> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| {
        Fail::Input(format!(
            "không mở được tệp {shown} / cannot open {shown}: {e}"
        ))
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            Fail::Input(format!(
                "không đọc được tệp {shown} / cannot read {shown}: {e}"
            ))
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Fail::Input(format!(
            "tệp {shown} lớn hơn 1 MiB / {shown} is larger than 1 MiB: one household per file"
        )));
    }
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Fail::Input(format!(
            "tệp {shown} không phải JSON hợp lệ / {shown} is not valid JSON: {e}"
        ))
    })?;
    fill_ids(&mut value, id)
        .map_err(|problem| Fail::Input(format!("tệp {shown} / {shown}: {problem}")))?;
    serde_json::from_value(value).map_err(|e| {
        Fail::Input(format!(
            "tệp {shown} không đúng mẫu phiếu hộ / {shown} does not fit the household form: {e}"
        ))
    })
}

fn is_missing(value: Option<&Value>) -> bool {
    matches!(value, None | Some(Value::Null))
}

/// Fills in missing ids; a household id that differs from `id` is an error.
fn fill_ids(value: &mut Value, id: Option<Uuid>) -> Result<(), String> {
    let Value::Object(record) = value else {
        return Err("phải là một đối tượng JSON {…} / must be a JSON object {…}".to_string());
    };
    match (record.get("id"), id) {
        (existing, _) if is_missing(existing) => {
            let id = id.unwrap_or_else(Uuid::now_v7);
            record.insert("id".into(), Value::String(id.to_string()));
        }
        (Some(Value::String(text)), Some(id)) if text.parse::<Uuid>().ok() != Some(id) => {
            return Err(format!(
                "mã hộ trong tệp ({text}) khác hộ đang sửa ({id}) / the file's id {text} is not the household being edited, {id}"
            ));
        }
        _ => {}
    }
    let mut heads = Vec::new();
    if let Some(Value::Array(members)) = record.get_mut("members") {
        for member in members.iter_mut() {
            if let Value::Object(member) = member {
                if is_missing(member.get("id")) {
                    member.insert("id".into(), Value::String(Uuid::now_v7().to_string()));
                }
                if member.get("relationship").and_then(Value::as_str) == Some("head") {
                    heads.push(member.get("id").cloned());
                }
            }
        }
    }
    if is_missing(record.get("head_member_id")) {
        if let [Some(head)] = heads.as_slice() {
            record.insert("head_member_id".into(), head.clone());
        }
    }
    Ok(())
}

/// The household whose id is, or starts with, what was typed.
pub fn resolve_household(store: &Store, typed: &str) -> Result<LocalHousehold, Fail> {
    let needle = typed.trim().to_lowercase();
    if let Ok(id) = needle.parse::<Uuid>() {
        return store.household(id)?.ok_or_else(|| not_found(typed));
    }
    let plain: String = needle.chars().filter(|c| *c != '-').collect();
    if plain.is_empty() || !plain.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Fail::Input(format!(
            "'{typed}' không phải mã hộ / '{typed}' is not a household id: type the id, or its first characters, as `ho list` shows it"
        )));
    }
    let mut matches: Vec<LocalHousehold> = store
        .households()?
        .into_iter()
        .filter(|local| local.id.simple().to_string().starts_with(&plain))
        .collect();
    match matches.len() {
        0 => Err(not_found(typed)),
        1 => Ok(matches.remove(0)),
        n => {
            let shown: Vec<String> = matches.iter().take(5).map(|m| m.id.to_string()).collect();
            Err(Fail::Input(format!(
                "'{typed}' khớp {n} hộ / '{typed}' matches {n} households ({}{}): type more of the id",
                shown.join(", "),
                if n > 5 { ", …" } else { "" }
            )))
        }
    }
}

fn not_found(typed: &str) -> Fail {
    Fail::Input(format!(
        "không có hộ nào có mã '{typed}' / no household id starts with '{typed}': see `ho list`"
    ))
}

/// The position of the member whose id is, or starts with, what was typed.
pub fn resolve_member(household: &Household, typed: &str) -> Result<usize, Fail> {
    let plain: String = typed
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let matches: Vec<usize> = household
        .members
        .iter()
        .enumerate()
        .filter(|(_, member)| {
            !plain.is_empty() && member.id.simple().to_string().starts_with(&plain)
        })
        .map(|(index, _)| index)
        .collect();
    match matches.as_slice() {
        [index] => Ok(*index),
        [] => Err(Fail::Input(format!(
            "hộ {} không có thành viên mã '{typed}' / household {} has no member with id '{typed}': see `ho show {}`",
            household.id, household.id, household.id
        ))),
        _ => Err(Fail::Input(format!(
            "'{typed}' khớp nhiều thành viên / '{typed}' matches several members: type more of the id"
        ))),
    }
}

/// The household's current record, for an edit.
pub fn record_of(local: &LocalHousehold) -> Result<Household, Fail> {
    local.household().map_err(|e| {
        Fail::Failed(format!(
            "bản ghi của hộ {id} trên máy không đọc được / the record of household {id} on this device does not fit the form ({e}): edit it with `ho edit {id} --json FILE`",
            id = local.id
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ids_are_made_and_the_head_is_named() {
        let mut value = serde_json::json!({
            "round": {"year": 2025, "kind": "periodic"},
            "commune_code": "00004", "village": "Thôn Đông", "address": "Số 1",
            "members": [
                {"full_name": "Nguyễn Văn A", "sex": "male", "date_of_birth": "1980-05-02", "relationship": "head"},
                {"full_name": "Nguyễn Thị B", "sex": "female", "date_of_birth": "1982-01-01", "relationship": "spouse"}
            ]
        });
        fill_ids(&mut value, None).expect("filled");
        let household: Household = serde_json::from_value(value).expect("a household");
        assert_eq!(household.members.len(), 2);
        assert_ne!(household.members[0].id, household.members[1].id);
        assert_eq!(household.head_member_id, Some(household.members[0].id));
        assert_eq!(household.id.get_version_num(), 7);
    }

    #[test]
    fn a_file_for_another_household_is_refused() {
        let mut value = serde_json::json!({"id": Uuid::from_u128(1).to_string()});
        assert!(fill_ids(&mut value, Some(Uuid::from_u128(2))).is_err());
        assert!(fill_ids(&mut serde_json::json!([1, 2]), None).is_err());
    }
}
