//! What the commands print: text for a person (Vietnamese, then English), or one JSON
//! document with `--json`.

use client_core::reference::Update;
use client_core::store::{LocalConflict, LocalHousehold, SaveReceipt, Store};
use client_core::SyncReport;
use protocol::classify::Classification;
use protocol::fields::{FieldMap, FieldValue};
use protocol::household::{Date, Household};
use protocol::merge::ConflictField;
use protocol::sync::{Base, ReviewState};
use std::collections::HashMap;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::{Config, Fail};

pub fn print_json(document: &Value) {
    out!("{document}");
}

/// Shortest prefixes (at least 8 hex digits) that tell these ids apart, like git's short
/// hashes. UUIDv7 ids start with their creation time, so ids made in the same minute share
/// their first digits and a fixed length would not do.
pub fn unique_prefixes(ids: impl IntoIterator<Item = Uuid>) -> HashMap<Uuid, String> {
    let mut hex: Vec<(String, Uuid)> = ids
        .into_iter()
        .map(|id| (id.simple().to_string(), id))
        .collect();
    hex.sort();
    hex.dedup();
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let mut out = HashMap::new();
    for (index, (text, id)) in hex.iter().enumerate() {
        let before = index
            .checked_sub(1)
            .and_then(|i| hex.get(i))
            .map_or(0, |(other, _)| common(text, other));
        let after = hex
            .get(index + 1)
            .map_or(0, |(other, _)| common(text, other));
        let length = (before.max(after) + 1).clamp(8, text.len());
        out.insert(*id, text.chars().take(length).collect());
    }
    out
}

/// Short ids of the households in the store.
pub struct ShortIds(HashMap<Uuid, String>);

impl ShortIds {
    pub fn of(store: &Store) -> Result<ShortIds, Fail> {
        Ok(ShortIds(unique_prefixes(
            store.households()?.into_iter().map(|local| local.id),
        )))
    }

    pub fn get(&self, id: Uuid) -> String {
        self.0
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.simple().to_string())
    }
}

fn text_field(fields: &FieldMap, path: &str) -> Option<String> {
    match fields.get(path) {
        Some(FieldValue::Text(text)) => Some(text.clone()),
        _ => None,
    }
}

/// The head's name, read from the fields so it shows even for a record that does not fit
/// the form.
fn head_name(fields: &FieldMap) -> String {
    text_field(fields, "head_member_id")
        .and_then(|head| text_field(fields, &format!("members.{head}.full_name")))
        .unwrap_or_else(|| "(chưa có chủ hộ / no head)".to_string())
}

fn value_text(value: Option<&FieldValue>) -> String {
    match value {
        None => "(không có / absent)".to_string(),
        Some(FieldValue::Null) => "(chưa trả lời / not answered)".to_string(),
        Some(FieldValue::Text(text)) if text.is_empty() => "(trống / empty)".to_string(),
        Some(FieldValue::Text(text)) => format!("\"{text}\""),
        Some(value) => value.to_string(),
    }
}

fn value_json(value: Option<&FieldValue>) -> Value {
    match value {
        None | Some(FieldValue::Null) => Value::Null,
        Some(FieldValue::Bool(b)) => Value::Bool(*b),
        Some(FieldValue::Int(n)) => json!(n),
        Some(FieldValue::Float(x)) => json!(x),
        Some(FieldValue::Text(text)) => Value::String(text.clone()),
        Some(FieldValue::List(items)) => {
            Value::Array(items.iter().map(|v| value_json(Some(v))).collect())
        }
    }
}

fn review_text(review: &ReviewState) -> String {
    match review {
        ReviewState::Submitted => "chờ duyệt / submitted".to_string(),
        ReviewState::Approved => "đã duyệt / approved".to_string(),
        ReviewState::Returned { comment } => {
            format!("bị trả lại / returned: \"{comment}\"")
        }
    }
}

fn review_json(review: &ReviewState) -> Value {
    match review {
        ReviewState::Submitted => json!({"state": "submitted"}),
        ReviewState::Approved => json!({"state": "approved"}),
        ReviewState::Returned { comment } => json!({"state": "returned", "comment": comment}),
    }
}

/// Short status words for a household.
fn statuses(local: &LocalHousehold) -> Vec<&'static str> {
    let mut out = Vec::new();
    if local.pending {
        out.push("chờ gửi/pending");
    }
    if local.in_conflict {
        out.push("xung đột/conflict");
    }
    if local.rejection.is_some() {
        out.push("bị từ chối/rejected");
    }
    if local.is_voided() {
        out.push("đã hủy/voided");
    }
    if local.out_of_scope {
        out.push("ngoài khu vực được giao/out of your areas");
    }
    match local.review {
        ReviewState::Returned { .. } => out.push("bị trả lại/returned"),
        ReviewState::Approved => out.push("đã duyệt/approved"),
        ReviewState::Submitted => {}
    }
    if out.is_empty() {
        out.push(if local.server_rev.is_some() {
            "đã đồng bộ/synced"
        } else {
            "mới/new"
        });
    }
    out
}

/// A time in Vietnam (UTC+7), `YYYY-MM-DD HH:MM`.
fn time_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000).saturating_add(7 * 3600);
    let date = Date::from_unix_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!("{date} {:02}:{:02}", of_day / 3600, (of_day % 3600) / 60)
}

/// Pads to a width in characters (precomposed Vietnamese letters are one column each).
fn pad(text: &str, width: usize) -> String {
    let mut out: String = text.chars().take(width).collect();
    let count = out.chars().count();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(count)));
    out
}

/// The proposed class, with the device's reference data (the server's once fetched) on the
/// reference date of the household's round: the same classification the server stores.
fn classification(store: &Store, household: &Household) -> Result<Classification, String> {
    client_core::reference::classify(store, household).map_err(|error| error.to_string())
}

/// The classification as JSON, or its error as `{"error": …}`.
fn classification_json(class: &Result<Classification, String>) -> Value {
    match class {
        Ok(class) => serde_json::to_value(class).unwrap_or(Value::Null),
        Err(error) => json!({ "error": error }),
    }
}

/// The class, the rule that decided and the deprivations; what is still missing only as a
/// count unless `full`.
fn classification_text(result: &Classification, full: bool) -> String {
    let mut out = format!(
        "Phân loại đề xuất / Proposed class: {} / {}",
        result.class.label_vi(),
        result.class.label_en()
    );
    if let Some(standard) = &result.standard_id {
        out.push_str(&format!(
            " (chuẩn / standard {standard}, ngày tham chiếu / reference date {})",
            result.reference_date
        ));
    }
    out.push_str(&format!("\n  {}", result.decided_by));
    if let protocol::classify::PovertyClass::CannotClassify { missing } = &result.class {
        if full {
            out.push_str("\n  Cần thêm / Still needed:");
            for item in missing {
                out.push_str(&format!("\n    - {item}"));
            }
        } else {
            out.push_str(&format!(
                "\n  Cần thêm {} câu trả lời, xem `ho show` / {} more answers needed, see `ho show`",
                missing.len(),
                missing.len()
            ));
        }
    }
    if !result.deprivations.is_empty() {
        out.push_str("\n  Thiếu hụt / Deprived in:");
        for deprivation in &result.deprivations {
            out.push_str(&format!(
                "\n    - {} / {}: {}",
                deprivation.indicator.label_vi(),
                deprivation.indicator.label_en(),
                deprivation.reason
            ));
        }
    }
    let undecided = matches!(
        result.class,
        protocol::classify::PovertyClass::CannotClassify { .. }
    );
    if full && !undecided && !result.not_assessed.is_empty() {
        out.push_str("\n  Chưa đánh giá được / Not assessed yet:");
        for gap in &result.not_assessed {
            out.push_str(&format!(
                "\n    - {} / {}: {}",
                gap.indicator.label_vi(),
                gap.indicator.label_en(),
                gap.missing.join("; ")
            ));
        }
    }
    out
}

pub fn saved(
    config: &Config,
    store: &Store,
    title: &str,
    receipt: &SaveReceipt,
    member: Option<Uuid>,
) -> Result<(), Fail> {
    let local = store.household(receipt.household_id)?;
    let class = local
        .as_ref()
        .and_then(|local| local.household().ok())
        .map(|household| classification(store, &household));
    if config.json {
        print_json(&json!({
            "ok": true,
            "household_id": receipt.household_id.to_string(),
            "mutation_seq": receipt.mutation_seq,
            "warnings": receipt.warnings,
            "member_id": member.map(|id| id.to_string()),
            "classification": class.as_ref().map(classification_json),
        }));
        return Ok(());
    }
    let ids = ShortIds::of(store)?;
    out!(
        "{title}: {} ({})",
        ids.get(receipt.household_id),
        receipt.household_id
    );
    if let Some(member) = member {
        out!("  Mã thành viên / Member id: {member}");
    }
    out!(
        "  Thay đổi số {} đã lưu trên máy, chờ đồng bộ / change #{} is saved on the device and waits for sync",
        receipt.mutation_seq, receipt.mutation_seq
    );
    match &class {
        Some(Ok(class)) => out!("{}", indent(&classification_text(class, false))),
        Some(Err(error)) => out!("  Chưa phân loại được / Not classified: {error}"),
        None => {}
    }
    if !receipt.warnings.is_empty() {
        out!("Cảnh báo (hộ vẫn được lưu) / Warnings (the household is saved anyway):");
        for warning in &receipt.warnings {
            out!("  - {warning}");
        }
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn list(config: &Config, store: &Store) -> Result<(), Fail> {
    let households = store.households()?;
    if config.json {
        let rows: Vec<Value> = households
            .iter()
            .map(|local| {
                json!({
                    "id": local.id.to_string(),
                    "head_name": head_name(&local.fields),
                    "village": text_field(&local.fields, "village"),
                    "server_rev": local.server_rev,
                    "pending": local.pending,
                    "in_conflict": local.in_conflict,
                    "rejection": local.rejection,
                    "out_of_scope": local.out_of_scope,
                    "voided": local.is_voided(),
                    "review": review_json(&local.review),
                })
            })
            .collect();
        print_json(&json!({"ok": true, "households": rows}));
        return Ok(());
    }
    let ids = ShortIds(unique_prefixes(households.iter().map(|local| local.id)));
    if households.is_empty() {
        out!("Chưa có hộ nào / No households yet: add one with `ho add`");
        return Ok(());
    }
    let width = households
        .iter()
        .map(|local| ids.get(local.id).len())
        .max()
        .unwrap_or(8);
    out!(
        "{}  {}  {}  {}  Trạng thái/Status",
        pad("Mã/ID", width),
        pad("Chủ hộ/Head", 26),
        pad("Thôn/Village", 18),
        pad("Rev", 4)
    );
    for local in &households {
        let rev = local
            .server_rev
            .map_or_else(|| "-".to_string(), |rev| rev.to_string());
        out!(
            "{}  {}  {}  {}  {}",
            pad(&ids.get(local.id), width),
            pad(&head_name(&local.fields), 26),
            pad(
                &text_field(&local.fields, "village").unwrap_or_default(),
                18
            ),
            pad(&rev, 4),
            statuses(local).join(", ")
        );
    }
    out!("{} hộ / households", households.len());
    Ok(())
}

/// Readable names of the common fields.
fn label(path: &str) -> Option<&'static str> {
    Some(match path {
        "commune_code" => "Mã xã / Commune code",
        "village" => "Thôn / Village",
        "address" => "Địa chỉ / Address",
        "round.year" => "Năm rà soát / Review year",
        "round.kind" => "Kỳ rà soát / Review kind",
        "income.estimated_per_person_vnd" => {
            "Thu nhập đ/người/tháng / Income VND per person per month"
        }
        "dwelling.durability" => "Loại nhà / House durability",
        "dwelling.floor_area_m2" => "Diện tích nhà m² / Floor area m²",
        "dwelling.water_source" => "Nguồn nước / Water source",
        "dwelling.latrine" => "Nhà tiêu / Latrine",
        "full_name" => "Họ tên / Full name",
        "date_of_birth" => "Ngày sinh / Date of birth",
        "sex" => "Giới tính / Sex",
        "relationship" => "Quan hệ với chủ hộ / Relationship",
        "personal_id" => "Số CCCD / Personal ID",
        "health_insurance" => "Bảo hiểm y tế / Health insurance",
        _ => return None,
    })
}

fn field_line(path: &str, value: &FieldValue) -> String {
    match label(path) {
        Some(label) => format!("{label} [{path}]: {}", value_text(Some(value))),
        None => format!("{path}: {}", value_text(Some(value))),
    }
}

fn conflict_lines(conflict: &LocalConflict) -> Vec<String> {
    let mut out = vec![format!(
        "Xung đột số {} (thay đổi số {}, phiên bản {}) / conflict #{} (change #{}, revision {}):",
        conflict.conflict_id,
        conflict.mutation_seq,
        conflict.rev,
        conflict.conflict_id,
        conflict.mutation_seq,
        conflict.rev
    )];
    for field in &conflict.fields {
        out.push(format!(
            "  {}: gốc/base {} | máy chủ giữ/server kept {} | của bạn/yours {}",
            field.path,
            value_text(field.base.as_ref()),
            value_text(field.theirs.as_ref()),
            value_text(field.mine.as_ref())
        ));
    }
    out
}

fn conflict_json(conflict: &LocalConflict) -> Value {
    let fields: Vec<Value> = conflict
        .fields
        .iter()
        .map(|field: &ConflictField| {
            json!({
                "path": field.path,
                "base": value_json(field.base.as_ref()),
                "theirs": value_json(field.theirs.as_ref()),
                "mine": value_json(field.mine.as_ref()),
            })
        })
        .collect();
    json!({
        "conflict_id": conflict.conflict_id,
        "household_id": conflict.household_id.to_string(),
        "mutation_seq": conflict.mutation_seq,
        "rev": conflict.rev,
        "fields": fields,
    })
}

pub fn show(config: &Config, store: &Store, local: &LocalHousehold) -> Result<(), Fail> {
    let conflicts: Vec<LocalConflict> = store
        .conflicts()?
        .into_iter()
        .filter(|conflict| conflict.household_id == local.id)
        .collect();
    let record = local.household();
    let class = record
        .as_ref()
        .ok()
        .map(|household| classification(store, household));
    if config.json {
        let fields: serde_json::Map<String, Value> = local
            .fields
            .iter()
            .map(|(path, value)| (path.clone(), value_json(Some(value))))
            .collect();
        print_json(&json!({
            "ok": true,
            "id": local.id.to_string(),
            "household": record.as_ref().ok().and_then(|h| serde_json::to_value(h).ok()),
            "fields": fields,
            "server_rev": local.server_rev,
            "pending": local.pending,
            "in_conflict": local.in_conflict,
            "voided": local.is_voided(),
            "review": review_json(&local.review),
            "rejection": local.rejection,
            "conflicts": conflicts.iter().map(conflict_json).collect::<Vec<_>>(),
            "classification": class.as_ref().map(classification_json),
        }));
        return Ok(());
    }
    out!("Hộ / Household {}", local.id);
    out!("  Trạng thái / Status: {}", statuses(local).join(", "));
    out!(
        "  Phiên bản máy chủ / Server revision: {}",
        local
            .server_rev
            .map_or_else(|| "chưa có / none yet".to_string(), |rev| rev.to_string())
    );
    out!("  Xét duyệt / Review: {}", review_text(&local.review));
    if let Some(reason) = &local.rejection {
        out!("  Bị từ chối vì / Rejected because: {reason}");
        out!("    Dữ liệu bạn nhập vẫn được giữ; sửa rồi lưu lại / what you typed is kept: fix it and save again");
    }
    if let Err(error) = &record {
        out!("  Bản ghi chưa khớp mẫu phiếu / The record does not fit the form: {error}");
    }
    out!("Thông tin hộ / Household fields:");
    let mut members: Vec<&str> = Vec::new();
    for (path, value) in &local.fields {
        match protocol::fields::member_of_path(path) {
            Some(member) => {
                if members.last() != Some(&member) {
                    members.push(member);
                }
            }
            None => out!("  {}", field_line(path, value)),
        }
    }
    let head = text_field(&local.fields, "head_member_id");
    let member_ids = unique_prefixes(members.iter().filter_map(|m| m.parse::<Uuid>().ok()));
    out!("Thành viên / Members ({}):", members.len());
    for member in members {
        let shown = member
            .parse::<Uuid>()
            .ok()
            .and_then(|id| member_ids.get(&id).cloned())
            .unwrap_or_else(|| member.to_string());
        let prefix = format!("members.{member}.");
        let name = text_field(&local.fields, &format!("{prefix}full_name")).unwrap_or_default();
        let is_head = head.as_deref() == Some(member);
        out!(
            "  {shown} {}{}",
            name,
            if is_head { " [chủ hộ / head]" } else { "" }
        );
        for (path, value) in local.fields.range(prefix.clone()..) {
            let Some(leaf) = path.strip_prefix(&prefix) else {
                break;
            };
            if leaf != "full_name" {
                out!("      {}", field_line(leaf, value));
            }
        }
    }
    match &class {
        Some(Ok(class)) => out!("{}", classification_text(class, true)),
        Some(Err(error)) => out!("Chưa phân loại được / Not classified: {error}"),
        None => {}
    }
    if !conflicts.is_empty() {
        out!("Xung đột chờ giám sát viên / Conflicts waiting for a supervisor:");
        for conflict in &conflicts {
            for line in conflict_lines(conflict) {
                out!("  {line}");
            }
        }
    }
    Ok(())
}

pub fn pending(config: &Config, store: &Store) -> Result<(), Fail> {
    let pending = store.pending()?;
    if config.json {
        let rows: Vec<Value> = pending
            .iter()
            .map(|mutation| {
                json!({
                    "seq": mutation.seq,
                    "household_id": mutation.household_id.to_string(),
                    "base_rev": match mutation.base { Base::New => None, Base::Rev(rev) => Some(rev) },
                    "changes": mutation.changes.len(),
                    "made_at_ms": mutation.made_at_ms,
                })
            })
            .collect();
        print_json(&json!({"ok": true, "pending": rows}));
        return Ok(());
    }
    if pending.is_empty() {
        out!("Không có thay đổi nào chờ gửi / Nothing waits to be sent");
        return Ok(());
    }
    let ids = ShortIds::of(store)?;
    let width = pending
        .iter()
        .map(|mutation| ids.get(mutation.household_id).len())
        .max()
        .unwrap_or(8)
        .max(12);
    out!(
        "Số/Seq  {}  Gốc/Base      Trường/Fields  Lúc/Saved at",
        pad("Hộ/Household", width)
    );
    for mutation in &pending {
        let base = match mutation.base {
            Base::New => "mới/new".to_string(),
            Base::Rev(rev) => format!("rev {rev}"),
        };
        out!(
            "{}  {}  {}  {}  {}",
            pad(&mutation.seq.to_string(), 6),
            pad(&ids.get(mutation.household_id), width),
            pad(&base, 12),
            pad(&mutation.changes.len().to_string(), 13),
            time_text(mutation.made_at_ms)
        );
    }
    out!(
        "{} thay đổi chờ gửi; chạy `ho sync` khi có mạng / {} changes waiting; run `ho sync` when online",
        pending.len(),
        pending.len()
    );
    Ok(())
}

pub fn conflicts(config: &Config, store: &Store) -> Result<(), Fail> {
    let conflicts = store.conflicts()?;
    if config.json {
        print_json(&json!({
            "ok": true,
            "conflicts": conflicts.iter().map(conflict_json).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if conflicts.is_empty() {
        out!("Không có xung đột nào / No conflicts");
        return Ok(());
    }
    let ids = ShortIds::of(store)?;
    for conflict in &conflicts {
        let name = store
            .household(conflict.household_id)?
            .map(|local| head_name(&local.fields))
            .unwrap_or_default();
        out!("Hộ / Household {} {name}", ids.get(conflict.household_id));
        for line in conflict_lines(conflict) {
            out!("  {line}");
        }
    }
    out!("Máy chủ giữ giá trị của mình; giá trị của bạn được lưu trong xung đột để giám sát viên chọn / the server kept its values; yours are kept in the conflict for a supervisor to choose");
    Ok(())
}

pub fn rejected(config: &Config, store: &Store) -> Result<(), Fail> {
    let rejections = store.rejections()?;
    if config.json {
        let rows: Vec<Value> = rejections
            .iter()
            .map(|rejection| {
                json!({
                    "mutation_seq": rejection.mutation_seq,
                    "household_id": rejection.household_id.to_string(),
                    "reason": rejection.reason,
                })
            })
            .collect();
        print_json(&json!({"ok": true, "rejected": rows}));
        return Ok(());
    }
    if rejections.is_empty() {
        out!("Không có thay đổi nào bị từ chối / No rejected changes");
        return Ok(());
    }
    let ids = ShortIds::of(store)?;
    for rejection in &rejections {
        let name = store
            .household(rejection.household_id)?
            .map(|local| head_name(&local.fields))
            .unwrap_or_default();
        out!(
            "Thay đổi số {} / change #{} — hộ / household {} {name}\n  Lý do / Reason: {}",
            rejection.mutation_seq,
            rejection.mutation_seq,
            ids.get(rejection.household_id),
            rejection.reason
        );
    }
    out!("Dữ liệu bạn nhập vẫn ở trên máy; sửa rồi lưu lại để gửi lại / what you typed is still on the device: fix it and save to send it again");
    Ok(())
}

pub fn sync_report(
    config: &Config,
    store: &Store,
    url: &str,
    report: &SyncReport,
    reference: &Result<Update, String>,
) -> Result<(), Fail> {
    if config.json {
        let reference = match reference {
            Ok(update) => json!({"changed": update.changed, "fingerprint": update.fingerprint}),
            Err(error) => json!({"error": error}),
        };
        print_json(&json!({
            "ok": true,
            "server": url,
            "reference": reference,
            "pushed": report.pushed,
            "applied": report.applied,
            "merged": report.merged,
            "conflicts": report.conflicts.iter().map(conflict_json).collect::<Vec<_>>(),
            "rejected": report.rejected.iter().map(|r| json!({
                "mutation_seq": r.mutation_seq,
                "household_id": r.household_id.to_string(),
                "reason": r.reason,
            })).collect::<Vec<_>>(),
            "returned": report.returned.iter().map(|(id, comment)| json!({
                "household_id": id.to_string(),
                "comment": comment,
            })).collect::<Vec<_>>(),
            "pulled": report.pulled,
            "left_scope": report.left_scope,
            "areas_grew": report.areas_grew,
        }));
        return Ok(());
    }
    let name_of = |id: Uuid| -> String {
        store
            .household(id)
            .ok()
            .flatten()
            .map(|local| head_name(&local.fields))
            .unwrap_or_default()
    };
    let ids = ShortIds::of(store)?;
    out!("Đồng bộ xong với {url} / Sync with {url} finished");
    out!("  Đã gửi / Pushed: {}", report.pushed);
    out!("  Được áp dụng / Applied: {}", report.applied);
    out!(
        "  Đã gộp với thay đổi khác / Merged with others' changes: {}",
        report.merged
    );
    out!("  Xung đột / Conflicts: {}", report.conflicts.len());
    for conflict in &report.conflicts {
        out!(
            "    Hộ / Household {} {}",
            ids.get(conflict.household_id),
            name_of(conflict.household_id)
        );
        for line in conflict_lines(conflict) {
            out!("      {line}");
        }
    }
    out!("  Bị từ chối / Rejected: {}", report.rejected.len());
    for rejection in &report.rejected {
        out!(
            "    Hộ / Household {} {} (thay đổi số / change #{}): {}",
            ids.get(rejection.household_id),
            name_of(rejection.household_id),
            rejection.mutation_seq,
            rejection.reason
        );
    }
    out!("  Bị trả lại / Returned: {}", report.returned.len());
    for (id, comment) in &report.returned {
        out!(
            "    Hộ / Household {} {}: \"{comment}\"",
            ids.get(*id),
            name_of(*id)
        );
    }
    out!("  Đã nhận / Pulled: {}", report.pulled);
    if report.areas_grew {
        out!("  Khu vực được giao đã mở rộng, đã tải thêm hộ / Your areas grew: their households were pulled");
    }
    if report.left_scope > 0 {
        out!(
            "  Đã gỡ {} hộ không còn thuộc khu vực được giao / Removed {} households no longer in your areas",
            report.left_scope, report.left_scope
        );
    }
    match reference {
        Ok(Update {
            changed: true,
            fingerprint,
        }) => out!(
            "  Đã cập nhật dữ liệu tham chiếu (chuẩn nghèo, khu vực) / Updated the reference data (poverty standards, areas): {fingerprint}"
        ),
        Ok(Update { changed: false, .. }) => {}
        Err(error) => out!(
            "  Chưa cập nhật được dữ liệu tham chiếu, vẫn dùng dữ liệu cũ / The reference data was not updated; the device keeps using what it has: {error}"
        ),
    }
    let waiting = store.pending()?.len();
    if waiting > 0 {
        out!(
            "  Còn {waiting} thay đổi mới lưu trong lúc đồng bộ / {waiting} changes saved during the sync wait for the next one"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_vietnam() {
        // 2025-10-01T16:59:00Z is 23:59 in Hà Nội.
        assert_eq!(time_text(1_759_337_940_000), "2025-10-01 23:59");
        assert_eq!(time_text(1_759_338_000_000), "2025-10-02 00:00");
    }

    #[test]
    fn short_ids_grow_until_they_are_unique() {
        let a = Uuid::from_u128(0x0190_0000_1111_7000_8000_0000_0000_0001);
        let b = Uuid::from_u128(0x0190_0000_1122_7000_8000_0000_0000_0002);
        let c = Uuid::from_u128(0x0290_0000_0000_7000_8000_0000_0000_0003);
        let ids = unique_prefixes([a, b, c]);
        assert_eq!(ids[&a], "01900000111");
        assert_eq!(ids[&b], "01900000112");
        assert_eq!(ids[&c], "02900000");
    }

    #[test]
    fn padding_counts_characters_not_bytes() {
        assert_eq!(pad("Đông", 6), "Đông  ");
        assert_eq!(pad("Nguyễn Văn Ánh", 6), "Nguyễn");
    }
}
