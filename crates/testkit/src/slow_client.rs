//! Requests written by hand over TCP, for clients an HTTP library will not imitate: a body that
//! arrives a byte at a time, or never completes.

use std::time::Duration;

use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Bytes a started request announces; far more than a test ever sends.
pub const ANNOUNCED: usize = 10_000;

/// Connects to `base` (`http://host:port`) and sends the head of `method path` with a JSON body
/// of [`ANNOUNCED`] bytes, and the first bytes of that body; the caller sends more, or not.
pub async fn start_request(base: &str, method: &str, path: &str, token: Option<&str>) -> TcpStream {
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {ANNOUNCED}\r\n\r\n{{\"name\": \""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// One answer read off a connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The JSON body (`Null` when there is none or it is not JSON).
    pub body: Value,
}

/// Reads one answer. Bounded, so that a server that never answers fails the test rather than
/// hanging it.
pub async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> RawAnswer {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    return (head.to_owned(), body.to_owned());
                }
            }
            assert!(n > 0, "connection closed before an answer: {text}");
        }
    };
    let (head, body) = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer");
    RawAnswer {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        head,
    }
}
