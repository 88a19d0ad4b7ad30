//! The room versions this server offers and their rules: ruma's stable versions 1 to 12, and
//! MSC3757's unstable `org.matrix.msc3757.10` and `.11` (owned state), which ruma 0.17 does not
//! know (`RoomVersionId::_Custom`, `rules()` is `None`). Every lookup of a version's rules goes
//! through [`rules`] rather than `RoomVersionId::rules()`.

use std::sync::LazyLock;

use ruma::{
    RoomVersionId,
    api::client::discovery::get_capabilities::v3::RoomVersionStability,
    room_version_rules::{RoomVersionDisposition, RoomVersionRules},
};

/// MSC3757 (owned state) on the rules of room version 10.
pub const MSC3757_V10: &str = "org.matrix.msc3757.10";
/// MSC3757 (owned state) on the rules of room version 11.
pub const MSC3757_V11: &str = "org.matrix.msc3757.11";

/// Every room version this server can create, join and take part in, in the order
/// `/capabilities` lists them.
pub static ROOM_VERSIONS: LazyLock<Vec<RoomVersionId>> = LazyLock::new(|| {
    let mut versions = vec![
        RoomVersionId::V1,
        RoomVersionId::V2,
        RoomVersionId::V3,
        RoomVersionId::V4,
        RoomVersionId::V5,
        RoomVersionId::V6,
        RoomVersionId::V7,
        RoomVersionId::V8,
        RoomVersionId::V9,
        RoomVersionId::V10,
        RoomVersionId::V11,
        RoomVersionId::V12,
    ];
    versions.extend([MSC3757_V10, MSC3757_V11].into_iter().filter_map(|id| RoomVersionId::try_from(id).ok()));
    versions
});

/// The rules of a room version this server supports, `None` for any other.
///
/// MSC3757's versions are v10's and v11's rules with the `Unstable` disposition, which is what
/// [`owned_state`] recognises them by: ruma's own unstable versions (MSC2870, behind a cargo
/// feature) are not enabled here, so no other rules this function returns are unstable.
pub fn rules(version: &RoomVersionId) -> Option<RoomVersionRules> {
    if let Some(rules) = version.rules() {
        return Some(rules);
    }
    let mut rules = match version.as_str() {
        MSC3757_V10 => RoomVersionRules::V10,
        MSC3757_V11 => RoomVersionRules::V11,
        _ => return None,
    };
    rules.disposition = RoomVersionDisposition::Unstable;
    Some(rules)
}

/// Whether these rules are one of MSC3757's versions (see [`rules`]): a state key that starts
/// with `@` may then be a user ID followed by `_` and a suffix, and the owner's state may also
/// be written by users with more power than the owner.
pub fn owned_state(rules: &RoomVersionRules) -> bool {
    matches!(rules.disposition, RoomVersionDisposition::Unstable)
}

/// How `/capabilities` describes a version: `stable`, or `unstable` for MSC3757's, as Synapse
/// advertises them.
pub fn stability(version: &RoomVersionId) -> RoomVersionStability {
    match rules(version).map(|rules| rules.disposition) {
        Some(RoomVersionDisposition::Stable) => RoomVersionStability::Stable,
        _ => RoomVersionStability::Unstable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_msc3757_versions_are_owned_state() {
        for version in ROOM_VERSIONS.iter() {
            let rules = rules(version).expect("every offered version has rules");
            let expected = matches!(version.as_str(), MSC3757_V10 | MSC3757_V11);
            assert_eq!(owned_state(&rules), expected, "{version}");
        }
        assert_eq!(ROOM_VERSIONS.len(), 14);
        assert!(rules(&RoomVersionId::try_from("org.matrix.msc3757.9").unwrap()).is_none());
        let v11 = rules(&RoomVersionId::try_from(MSC3757_V11).unwrap()).unwrap();
        assert!(v11.authorization.use_room_create_sender);
        assert!(matches!(stability(&RoomVersionId::V10), RoomVersionStability::Stable));
    }
}
