//! The delivery log: a subscription's deliveries, and one delivery with its event and attempts.

pub mod get;
pub mod list;
pub mod view;
