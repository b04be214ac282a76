//! `/v1/filters`: payload filters on their own, apart from any subscription.

pub mod test;
