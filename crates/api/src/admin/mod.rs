//! Operator endpoints (scope `admin`): what the dispatcher refused, to read, re-drive or delete.

pub mod invalid_events;
