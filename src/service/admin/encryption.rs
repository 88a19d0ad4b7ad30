//! Encryption at rest as the admin API shows it: whether it is on, the active key's id and the
//! progress of a key rotation.

use serde_json::{Value, json};

use crate::service::Services;

/// `{"enabled": false}`, or the active key id and the rotation in progress (`null` when none).
pub fn status(services: &Services) -> Value {
    match services.db.encryption_status() {
        None => json!({"enabled": false}),
        Some(status) => json!({
            "enabled": true,
            "active_key_id": status.active_key_id,
            "rotation": status.rotation,
        }),
    }
}
