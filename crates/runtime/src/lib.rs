//! What every Waybill service shares at run time: configuration, logging, errors, auth, rate
//! limits, request ids, health and metrics.

pub mod access;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod openapi;
pub mod rate_limit;
pub mod service;
pub mod telemetry;

pub use auth::{Auth, AuthState, JwtKeys};
pub use config::{Environment, Settings};
pub use error::{ApiError, Reply};
