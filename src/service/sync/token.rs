//! Sync tokens (`since`, `next_batch`): one stream position per sync stream, as
//! `s{events}_{account_data}`. Later streams (to-device, receipts, ...) append `_{position}`
//! parts; a token with extra parts still parses, so old clients' tokens keep working when a
//! stream is added and new parts default to 0 when absent.

use std::fmt;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    /// Room event stream position (also the room pagination token space).
    pub events: u64,
    /// Account data stream position.
    pub account_data: u64,
}

impl SyncToken {
    pub fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param("Invalid sync token");
        let rest = token.strip_prefix('s').ok_or_else(invalid)?;
        let mut parts = rest.split('_').map(|part| part.parse::<u64>().map_err(|_| invalid()));
        let events = parts.next().ok_or_else(invalid)??;
        let account_data = parts.next().transpose()?.unwrap_or(0);
        // Parts of streams this build does not know must still be numbers.
        for part in parts {
            part?;
        }
        Ok(Self { events, account_data })
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.events, self.account_data)
    }
}

#[cfg(test)]
mod tests {
    use super::SyncToken;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let token = SyncToken { events: 42, account_data: 7 };
        assert_eq!(token.to_string(), "s42_7");
        assert_eq!(SyncToken::parse("s42_7").ok(), Some(token));
        assert_eq!(SyncToken::parse("s42").ok(), Some(SyncToken { events: 42, account_data: 0 }));
        assert_eq!(SyncToken::parse("s42_7_9").ok(), Some(token));
        for bad in ["", "s", "42_7", "s_7", "sx_1", "s1_y", "s1_2_z", "s-1_2", "s1__2"] {
            assert!(SyncToken::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
