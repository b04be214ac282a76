//! The delivery log (a subscription's deliveries, one delivery with its event and attempts) and
//! replays (one delivery, or every failed one of a window).

pub mod get;
pub mod list;
pub mod replay;
pub mod view;
