//! `unflatten` as it was, through `serde_json::Value`: the oracle the direct one
//! (`super::tree`) is held to.

use serde_json::{Map, Number, Value};

use super::{check_leaf, FieldError, FieldMap, FieldValue, KEYED_LISTS};
use crate::household::Household;

pub(crate) fn unflatten(fields: &FieldMap) -> Result<Household, FieldError> {
    let mut root = Map::new();
    for (path, value) in fields {
        check_leaf(path, value)?;
        insert_path(&mut root, path, to_json(value))?;
    }
    for list in KEYED_LISTS {
        if let Some(Value::Object(items)) = root.remove(*list) {
            // Ids are UUIDv7 made on devices, so key order is creation order.
            let array = items
                .into_iter()
                .map(|(id, mut item)| {
                    if let Value::Object(fields) = &mut item {
                        fields.insert("id".to_string(), Value::String(id));
                    }
                    item
                })
                .collect();
            root.insert((*list).to_string(), Value::Array(array));
        }
    }
    serde_json::from_value(Value::Object(root)).map_err(|e| FieldError::Shape(e.to_string()))
}

fn to_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Null => Value::Null,
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Int(i) => Value::Number((*i).into()),
        FieldValue::Float(x) => Number::from_f64(*x).map_or(Value::Null, Value::Number),
        FieldValue::Text(s) => Value::String(s.clone()),
        FieldValue::List(items) => Value::Array(items.iter().map(to_json).collect()),
    }
}

fn insert_path(root: &mut Map<String, Value>, path: &str, value: Value) -> Result<(), FieldError> {
    let invalid = |problem: &str| FieldError::Invalid {
        path: path.to_string(),
        problem: problem.to_string(),
    };
    let mut node = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if part.is_empty() {
            return Err(invalid(
                "đường dẫn có đoạn rỗng / the path has an empty segment",
            ));
        }
        if parts.peek().is_none() {
            if node.contains_key(part) {
                return Err(invalid(
                    "trùng với một nhóm trường / clashes with a group of fields",
                ));
            }
            node.insert(part.to_string(), value);
            return Ok(());
        }
        // Looked up before inserting: most segments (`members`, a member's id) exist already,
        // and an entry by owned key would allocate the segment for every path.
        if !node.contains_key(part) {
            node.insert(part.to_string(), Value::Object(Map::new()));
        }
        node = match node.get_mut(part) {
            Some(Value::Object(map)) => map,
            _ => {
                return Err(invalid(
                    "nằm dưới một giá trị đơn / sits under a plain value",
                ))
            }
        };
    }
    Ok(())
}
