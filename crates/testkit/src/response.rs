//! A service's HTTP answer, read whole, with the assertions the suites make on it.

use reqwest::{StatusCode, header::HeaderMap};
use serde_json::Value;

/// A response: status, headers and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    /// Reads `res` whole; panics, showing it, on a body that is not JSON, which no Waybill
    /// endpoint the suites call should send.
    pub async fn read(res: reqwest::Response) -> Response {
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Response {
            status,
            headers,
            body,
        }
    }

    /// The field names of a 422's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["error"]["errors"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// `field` of every item in `data`, in order: what list and batch answers are checked by.
    pub fn pluck(&self, field: &str) -> Vec<&str> {
        self.body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no `data` list: {}", self.body))
            .iter()
            .map(|item| item[field].as_str().unwrap())
            .collect()
    }

    /// The error code, empty when there is none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// The error message, empty when there is none.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// Asserts an error answer: its status and its code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        self.assert(status);
        assert_eq!(self.code(), code, "body: {}", self.body);
        self
    }

    /// Asserts an error answer whose message mentions `part`.
    #[track_caller]
    pub fn assert_message(&self, status: u16, part: &str) -> &Self {
        self.assert(status);
        assert!(
            self.message().contains(part),
            "expected `{part}` in the message; body: {}",
            self.body
        );
        self
    }

    #[track_caller]
    pub fn assert(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts a 422 whose errors name `field`.
    #[track_caller]
    pub fn assert_invalid(&self, field: &str) {
        assert_eq!(
            self.status.as_u16(),
            422,
            "expected 422 on {field}; body: {}",
            self.body
        );
        assert_eq!(self.code(), "validation_failed");
        assert_eq!(self.body["error"]["message"], "The given data was invalid.");
        assert!(
            self.error_fields().iter().any(|f| f == field),
            "expected an error on `{field}`, got {}",
            self.body
        );
    }

    /// Asserts a 422 and returns the messages recorded for `field`.
    #[track_caller]
    pub fn errors_on(&self, field: &str) -> Vec<String> {
        assert_eq!(self.status.as_u16(), 422, "body: {}", self.body);
        self.body["error"]["errors"][field]
            .as_array()
            .unwrap_or_else(|| panic!("no error on `{field}`: {}", self.body))
            .iter()
            .map(|m| m.as_str().unwrap().to_owned())
            .collect()
    }
}
