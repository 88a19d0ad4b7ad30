//! Sync tokens (`since`, `next_batch`): one stream position per sync stream, as
//! `s{events}_a{account_data}_d{to_device}_k{key_changes}_t{typing}_r{receipts}_p{presence}`. The first
//! part is the room event position; every later part is a one-letter stream tag and a position. A stream added later
//! gets a new tag: older tokens lack it (it reads as 0) and tags this build does not know are
//! skipped, as long as they carry a number. `/keys/changes` reads the `k` part of a token.

use std::fmt;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    /// Room event stream position (also the room pagination token space).
    pub events: u64,
    /// Account data stream position.
    pub account_data: u64,
    /// To-device stream position: messages up to it were delivered to the syncing device.
    pub to_device: u64,
    /// Device-key change position.
    pub key_changes: u64,
    /// Typing serial (in memory: it restarts at 0 with the server).
    pub typing: u64,
    /// Receipt stream position.
    pub receipts: u64,
    /// Presence stream position.
    pub presence: u64,
}

impl SyncToken {
    /// This token with each position at most `now`'s: a token from the future (a restored
    /// database) counts as "now".
    pub fn at_most(self, now: SyncToken) -> SyncToken {
        SyncToken {
            events: self.events.min(now.events),
            account_data: self.account_data.min(now.account_data),
            to_device: self.to_device.min(now.to_device),
            key_changes: self.key_changes.min(now.key_changes),
            typing: self.typing.min(now.typing),
            receipts: self.receipts.min(now.receipts),
            presence: self.presence.min(now.presence),
        }
    }

    pub fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param("Invalid sync token");
        let number = |digits: &str| -> Result<u64> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            digits.parse().map_err(|_| invalid())
        };
        let mut parts = token.split('_');
        let events = number(parts.next().and_then(|p| p.strip_prefix('s')).ok_or_else(invalid)?)?;
        let mut parsed = Self { events, ..Self::default() };
        for part in parts {
            let mut chars = part.chars();
            let tag = chars.next().filter(char::is_ascii_lowercase).ok_or_else(invalid)?;
            let position = number(chars.as_str())?;
            match tag {
                'a' => parsed.account_data = position,
                'd' => parsed.to_device = position,
                'k' => parsed.key_changes = position,
                't' => parsed.typing = position,
                'r' => parsed.receipts = position,
                'p' => parsed.presence = position,
                _ => {}
            }
        }
        Ok(parsed)
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "s{}_a{}_d{}_k{}_t{}_r{}_p{}",
            self.events, self.account_data, self.to_device, self.key_changes, self.typing, self.receipts, self.presence
        )
    }
}

#[cfg(test)]
mod tests {
    use super::SyncToken;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let token = SyncToken {
            events: 42,
            account_data: 7,
            to_device: 3,
            key_changes: 9,
            typing: 4,
            receipts: 5,
            presence: 6,
        };
        assert_eq!(token.to_string(), "s42_a7_d3_k9_t4_r5_p6");
        assert_eq!(SyncToken::parse("s42_a7_d3_k9_t4_r5_p6").ok(), Some(token));
        // A token from before the presence stream reads it as 0.
        assert_eq!(SyncToken::parse("s42_a7_d3_k9_t4_r5").ok(), Some(SyncToken { presence: 0, ..token }));
        // Missing streams read as 0; unknown tags are skipped.
        assert_eq!(SyncToken::parse("s42").ok(), Some(SyncToken { events: 42, ..SyncToken::default() }));
        assert_eq!(SyncToken::parse("s42_z5_a7_d3_k9_t4_r5_p6").ok(), Some(token));
        for bad in ["", "s", "42_a7", "s_a7", "sx_a1", "s1_ay", "s1_a", "s1_7", "s-1", "s1__a2", "s+1", "s1_A2"] {
            assert!(SyncToken::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
