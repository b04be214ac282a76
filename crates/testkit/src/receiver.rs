//! A real HTTP/1.1 server that tests point webhooks at. It is written on a bare TCP listener,
//! parsing requests by hand, so a test can script the wire down to dropping a connection
//! mid-exchange, which a framework server would not let it do.
//!
//! Malformed requests are answered 400 and the connection closed; they are not recorded and do
//! not consume the script, since no sender under test should ever produce one.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::{JoinHandle, JoinSet},
};

/// Largest request head (request line and headers) accepted, answered 431 beyond.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted, answered 413 beyond.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// How long a rejected connection is drained before closing (see [`close_gently`]).
const LINGER: Duration = Duration::from_secs(1);

/// What the receiver does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer `status` with these extra headers and body after waiting `delay`.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        delay: Duration,
    },
    /// Close the TCP connection without answering (after reading the request).
    Drop,
}

impl Reply {
    /// Answers `code` at once, with no extra headers and an empty body.
    pub fn status(code: u16) -> Reply {
        Reply::delayed(code, Duration::ZERO)
    }

    /// Answers `code` after waiting `delay`.
    pub fn delayed(code: u16, delay: Duration) -> Reply {
        Reply::Respond {
            status: code,
            headers: Vec::new(),
            body: String::new(),
            delay,
        }
    }

    /// Adds a response header; panics on [`Reply::Drop`], which has no response to add it to.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        match &mut self {
            Reply::Respond { headers, .. } => headers.push((name.to_owned(), value.to_owned())),
            // A silent no-op would hide a test that scripts something it never gets.
            Reply::Drop => {
                panic!("Reply::Drop.with_header({name:?}, ..): a dropped connection has no headers")
            }
        }
        self
    }

    /// Sets the response body; panics on [`Reply::Drop`], which has no response to carry it.
    pub fn with_body(mut self, body: impl Into<String>) -> Reply {
        match &mut self {
            Reply::Respond { body: b, .. } => *b = body.into(),
            Reply::Drop => panic!("Reply::Drop.with_body(..): a dropped connection has no body"),
        }
        self
    }

    fn status_code(&self) -> Option<u16> {
        match self {
            Reply::Respond { status, .. } => Some(*status),
            Reply::Drop => None,
        }
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The request target as sent, e.g. `/hooks/a?x=1`.
    pub path: String,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the full request had been read.
    pub at: Instant,
    /// What was answered; `None` when the connection was dropped.
    pub status: Option<u16>,
}

impl Received {
    /// The first value of header `name`, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct State {
    default: Reply,
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

struct Shared {
    state: Mutex<State>,
    arrived: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and a test's view must survive a test panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Picks the reply for a fully read request and records it, in one step, so the record's
    /// status and the order of records match the order replies were taken from the script.
    fn decide(&self, request: Request) -> Reply {
        let reply = {
            let mut state = self.state();
            let reply = match state.script.pop_front() {
                Some(reply) => reply,
                None => state.default.clone(),
            };
            state.received.push(Received {
                method: request.method,
                path: request.target,
                headers: request.headers,
                body: request.body,
                at: Instant::now(),
                status: reply.status_code(),
            });
            reply
        };
        self.arrived.notify_waiters();
        reply
    }
}

/// A scriptable webhook endpoint on a random local port, serving until dropped.
pub struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Receiver {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                default: Reply::status(200),
                script: VecDeque::new(),
                received: Vec::new(),
            }),
            arrived: Notify::new(),
        });
        let accept = tokio::spawn(serve(listener, shared.clone()));
        Receiver {
            port,
            shared,
            accept,
        }
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sets the reply used whenever the script is empty (initially `Reply::status(200)`).
    pub fn set_default(&self, reply: Reply) {
        self.shared.state().default = reply;
    }

    /// Queues replies used once each, in order, before falling back to the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.state().script.extend(replies);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.state().received.clone()
    }

    /// The requests whose target starts with `prefix`, in arrival order.
    pub fn received_on(&self, prefix: &str) -> Vec<Received> {
        self.shared
            .state()
            .received
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.shared.state().received.len()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout` saying how many did.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so an arrival between the look and the wait still wakes.
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let received = self.received();
                if received.len() >= n {
                    return received;
                }
                let seen: Vec<String> = received
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect();
                panic!(
                    "waited {timeout:?} for {n} requests on port {}, {} arrived: {seen:?}",
                    self.port,
                    received.len()
                );
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The connection tasks live in a JoinSet owned by the accept task, so they go with it.
        self.accept.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, shared.clone()));
                }
                // Accept errors (a client gone before accept, descriptors exhausted) are
                // transient; stopping would fail every later test request confusingly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reaps finished connections so a long test does not accumulate them.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A request read off the wire, before it is recorded.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Whether the client lets the connection stay open after the response.
    keep_alive: bool,
    /// HTTP/1.0 keeps a connection only when the response says so too.
    http10: bool,
}

/// Why a connection stops reading requests.
enum Failure {
    /// The peer went away or the socket failed: nobody to answer.
    Gone,
    /// The request cannot be served: answer this status and close.
    Reject(u16, String),
}

fn reject(status: u16, why: impl Into<String>) -> Failure {
    Failure::Reject(status, why.into())
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    // Responses go out in one write each, so Nagle would only add latency to small replies.
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    loop {
        let request = match read_request(&mut conn).await {
            Ok(Some(request)) => request,
            Ok(None) | Err(Failure::Gone) => return,
            Err(Failure::Reject(status, why)) => {
                let head_only = false;
                let response = encode(status, &[], why.as_bytes(), head_only, Framing::Close);
                if conn.get_mut().write_all(&response).await.is_ok() {
                    close_gently(conn.into_inner()).await;
                }
                return;
            }
        };
        let head_only = request.method == "HEAD";
        let client_keeps = request.keep_alive;
        let http10 = request.http10;
        let Reply::Respond {
            status,
            headers,
            body,
            delay,
        } = shared.decide(request)
        else {
            // Dropping the stream sends FIN; the request was read in full, so no RST.
            return;
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let reply_closes = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"));
        let framing = if !client_keeps || reply_closes {
            Framing::Close
        } else if http10 {
            Framing::KeepAlive10
        } else {
            Framing::KeepAlive
        };
        let response = encode(status, &headers, body.as_bytes(), head_only, framing);
        if conn.get_mut().write_all(&response).await.is_err() {
            return;
        }
        if matches!(framing, Framing::Close) {
            close_gently(conn.into_inner()).await;
            return;
        }
    }
}

/// Closes after a final response without letting unread input turn the close into a reset,
/// which could destroy the response before the client reads it.
async fn close_gently(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Reads one request; `Ok(None)` when the peer closed cleanly between requests.
async fn read_request(conn: &mut BufReader<TcpStream>) -> Result<Option<Request>, Failure> {
    let mut budget = MAX_HEAD;
    // RFC 9112 §2.2: a server should ignore empty lines before the request line.
    let line = loop {
        match read_line(conn, &mut budget, 431).await? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let line = String::from_utf8(line).map_err(|_| reject(400, "request line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(400, "request line is not `METHOD target HTTP/1.1`"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(reject(400, "bad method"));
    }
    if target.is_empty()
        || target
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(reject(400, "bad request target"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(reject(505, "only HTTP/1.x is served")),
        _ => return Err(reject(400, "bad HTTP version")),
    };

    let mut headers = Vec::new();
    loop {
        let line = read_line(conn, &mut budget, 431)
            .await?
            .ok_or(Failure::Gone)?;
        if line.is_empty() {
            break;
        }
        headers.push(parse_header(line)?);
    }
    if !http10 && values(&headers, "host").next().is_none() {
        return Err(reject(400, "HTTP/1.1 request without Host"));
    }
    let connection_has = |token: &str| values(&headers, "connection").any(|v| has_token(v, token));
    let keep_alive = if http10 {
        connection_has("keep-alive")
    } else {
        !connection_has("close")
    };

    let codings: Vec<String> = values(&headers, "transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    let lengths: Vec<&str> = values(&headers, "content-length")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // Decided before any 100 Continue, so a doomed request is refused without its body.
    let framing = if values(&headers, "transfer-encoding").next().is_some() {
        // Both framings at once is the request-smuggling shape; refusing is what RFC 9112 §6.3
        // allows and keeps this server from guessing.
        if !lengths.is_empty() {
            return Err(reject(400, "both Transfer-Encoding and Content-Length"));
        }
        match codings.as_slice() {
            [only] if only == "chunked" => BodyFraming::Chunked,
            [.., last] if last == "chunked" => {
                return Err(reject(501, "only the chunked transfer coding is served"));
            }
            _ => return Err(reject(400, "Transfer-Encoding does not end in chunked")),
        }
    } else if let Some(first) = lengths.first() {
        if lengths.iter().any(|l| l != first) {
            return Err(reject(400, "conflicting Content-Length values"));
        }
        // `parse` alone would accept a leading `+`.
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(reject(400, "bad Content-Length"));
        }
        let length: usize = first
            .parse()
            .map_err(|_| reject(413, "Content-Length too large"))?;
        if length > MAX_BODY {
            return Err(reject(413, "Content-Length too large"));
        }
        BodyFraming::Length(length)
    } else {
        BodyFraming::Length(0)
    };

    // Clients such as curl hold a large body back until told to go on.
    let expects_continue =
        values(&headers, "expect").any(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue && !http10 && !matches!(framing, BodyFraming::Length(0)) {
        conn.get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| Failure::Gone)?;
    }

    let body = match framing {
        BodyFraming::Length(length) => {
            let mut body = vec![0; length];
            conn.read_exact(&mut body)
                .await
                .map_err(|_| Failure::Gone)?;
            body
        }
        BodyFraming::Chunked => read_chunked(conn, &mut budget).await?,
    };

    Ok(Some(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
        keep_alive,
        http10,
    }))
}

enum BodyFraming {
    Length(usize),
    Chunked,
}

/// Reads a chunked body; trailer fields are read and discarded, spending the head's `budget`.
async fn read_chunked(
    conn: &mut BufReader<TcpStream>,
    budget: &mut usize,
) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    loop {
        let mut line_budget = MAX_CHUNK_LINE;
        let line = read_line(conn, &mut line_budget, 400)
            .await?
            .ok_or(Failure::Gone)?;
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = size.trim_ascii();
        // `from_str_radix` alone would accept a leading `+`; 15 digits keep it within a u64.
        if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(reject(400, "bad chunk size"));
        }
        let size = std::str::from_utf8(size)
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| reject(400, "bad chunk size"))?;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > MAX_BODY - body.len() {
            return Err(reject(413, "chunked body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])
            .await
            .map_err(|_| Failure::Gone)?;
        let mut line_budget = MAX_CHUNK_LINE;
        let end = read_line(conn, &mut line_budget, 400)
            .await?
            .ok_or(Failure::Gone)?;
        if !end.is_empty() {
            return Err(reject(400, "chunk data longer than its size"));
        }
    }
    loop {
        let line = read_line(conn, budget, 431).await?.ok_or(Failure::Gone)?;
        if line.is_empty() {
            return Ok(body);
        }
        parse_header(line)?;
    }
}

/// Reads one line, without its CRLF (a bare LF is tolerated), spending `budget` bytes at most;
/// a longer line is rejected with `too_long`. `Ok(None)` on end of input before any byte.
async fn read_line(
    conn: &mut BufReader<TcpStream>,
    budget: &mut usize,
    too_long: u16,
) -> Result<Option<Vec<u8>>, Failure> {
    let mut line = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX);
    let n = (&mut *conn)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|_| Failure::Gone)?;
    *budget -= n;
    if line.last() != Some(&b'\n') {
        return match (*budget, n) {
            (0, _) => Err(reject(too_long, "line too long")),
            (_, 0) => Ok(None),
            _ => Err(Failure::Gone),
        };
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    // RFC 9112 §2.2: a bare CR elsewhere must be rejected (or replaced); rejecting is clearer.
    if line.contains(&b'\r') {
        return Err(reject(400, "bare CR in a line"));
    }
    Ok(Some(line))
}

/// Splits a field line into a lower-cased name and a value without surrounding whitespace.
fn parse_header(line: Vec<u8>) -> Result<(String, String), Failure> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(reject(400, "obsolete line folding"));
    }
    let line = String::from_utf8(line).map_err(|_| reject(400, "header is not UTF-8"))?;
    let Some((name, value)) = line.split_once(':') else {
        return Err(reject(400, "header line without a colon"));
    };
    // This also refuses whitespace before the colon, which RFC 9112 §5.1 requires.
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(reject(400, "bad header name"));
    }
    Ok((
        name.to_ascii_lowercase(),
        value.trim_matches([' ', '\t']).to_owned(),
    ))
}

/// The values of header `name` (already lower-case), in order.
fn values<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Whether a comma-separated header value lists `token` (case-insensitively).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// RFC 9110 §5.6.2 token characters, what methods and field names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How a response leaves the connection.
#[derive(Clone, Copy)]
enum Framing {
    KeepAlive,
    /// An HTTP/1.0 client keeps the connection only when told so.
    KeepAlive10,
    Close,
}

fn encode(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
    framing: Framing,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (name, value) in headers {
        // The receiver frames every response itself; a second length would be ambiguous.
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    // RFC 9110 §8.6 and §15.4.5: these statuses never carry content, and 1xx and 204 must not
    // even announce a length.
    let bodyless = (100..200).contains(&status) || status == 204 || status == 304;
    if !bodyless {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    match framing {
        Framing::KeepAlive => {}
        Framing::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Framing::Close => {
            let already = headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"));
            if !already {
                out.extend_from_slice(b"connection: close\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    if !bodyless && !head_only {
        out.extend_from_slice(body);
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        // An empty reason phrase is valid (RFC 9112 §4), and clients ignore it anyway.
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        // A proxy from the environment would otherwise intercept 127.0.0.1.
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    /// Reads one response off a raw connection: status, lower-cased headers, body.
    async fn read_response(
        conn: &mut BufReader<TcpStream>,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').unwrap();
            headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
        (status, headers, body)
    }

    async fn raw(receiver: &Receiver) -> BufReader<TcpStream> {
        BufReader::new(
            TcpStream::connect(("127.0.0.1", receiver.port()))
                .await
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn answers_200_by_default() {
        let receiver = Receiver::start().await;
        let response = client()
            .post(receiver.url("/hooks/a?x=1"))
            .json(&serde_json::json!({"event": "order.created"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let received = receiver.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].method, "POST");
        assert_eq!(received[0].path, "/hooks/a?x=1");
        assert_eq!(received[0].status, Some(200));
        assert_eq!(received[0].json()["event"], "order.created");
    }

    #[tokio::test]
    async fn follows_the_script_then_the_default() {
        let receiver = Receiver::start().await;
        receiver.set_default(Reply::status(202));
        receiver.script([Reply::status(500), Reply::status(503)]);
        let client = client();
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let response = client.post(receiver.url("/h")).send().await.unwrap();
            statuses.push(response.status().as_u16());
        }
        assert_eq!(statuses, [500, 503, 202, 202]);
        let recorded: Vec<_> = receiver.received().iter().map(|r| r.status).collect();
        assert_eq!(recorded, [Some(500), Some(503), Some(202), Some(202)]);
    }

    #[tokio::test]
    async fn returns_scripted_headers_and_body() {
        let receiver = Receiver::start().await;
        receiver.script([Reply::status(201)
            .with_header("X-Ack", "yes")
            .with_body("accepted")]);
        let response = client().post(receiver.url("/h")).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["x-ack"], "yes");
        assert_eq!(response.headers()["content-length"], "8");
        assert_eq!(response.text().await.unwrap(), "accepted");
    }

    #[tokio::test]
    async fn waits_before_a_delayed_reply() {
        let receiver = Receiver::start().await;
        let delay = Duration::from_millis(300);
        receiver.script([Reply::delayed(200, delay)]);
        let started = Instant::now();
        let response = client().post(receiver.url("/h")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_delayed_reply_does_not_hold_up_other_connections() {
        let receiver = Receiver::start().await;
        receiver.script([Reply::delayed(200, Duration::from_secs(30))]);
        let slow = tokio::spawn({
            let url = receiver.url("/slow");
            async move { client().post(url).send().await }
        });
        receiver.wait_for(1, Duration::from_secs(5)).await;
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            client().post(receiver.url("/fast")).send(),
        )
        .await
        .expect("the fast request waited for the slow one")
        .unwrap();
        assert_eq!(response.status(), 200);
        slow.abort();
    }

    #[tokio::test]
    async fn drop_gives_the_client_an_error() {
        let receiver = Receiver::start().await;
        receiver.script([Reply::Drop]);
        let client = client();
        let result = client.post(receiver.url("/h")).body("x").send().await;
        assert!(result.is_err(), "{result:?}");
        let response = client.post(receiver.url("/h")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let recorded: Vec<_> = receiver.received().iter().map(|r| r.status).collect();
        assert_eq!(recorded, [None, Some(200)]);
    }

    #[tokio::test]
    async fn records_two_requests_on_one_keep_alive_connection() {
        let receiver = Receiver::start().await;
        let mut conn = raw(&receiver).await;
        conn.get_mut()
            .write_all(b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let (status, headers, _) = read_response(&mut conn).await;
        assert_eq!(status, 200);
        assert!(!headers.iter().any(|(n, _)| n == "connection"));
        conn.get_mut()
            .write_all(
                b"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                  Connection: close\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
            )
            .await
            .unwrap();
        let (status, headers, _) = read_response(&mut conn).await;
        assert_eq!(status, 200);
        assert!(headers.contains(&("connection".into(), "close".into())));
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "closed after Connection: close");

        let received = receiver.received();
        assert_eq!(received.len(), 2);
        assert_eq!(received[0].path, "/one");
        assert_eq!(received[0].body, b"hello");
        assert_eq!(received[1].path, "/two");
        assert_eq!(received[1].body, b"abc0123456789");
        assert!(received[0].at <= received[1].at);
    }

    #[tokio::test]
    async fn looks_headers_up_case_insensitively() {
        let receiver = Receiver::start().await;
        client()
            .post(receiver.url("/h"))
            .header("X-Waybill-Signature", "v1=abc")
            .send()
            .await
            .unwrap();
        let received = &receiver.received()[0];
        assert!(
            received
                .headers
                .iter()
                .any(|(n, _)| n == "x-waybill-signature")
        );
        assert_eq!(received.header("x-waybill-signature"), Some("v1=abc"));
        assert_eq!(received.header("X-WAYBILL-SIGNATURE"), Some("v1=abc"));
        assert_eq!(received.header("x-missing"), None);
    }

    #[tokio::test]
    async fn answers_malformed_requests_400_and_closes() {
        let receiver = Receiver::start().await;
        let mut conn = raw(&receiver).await;
        conn.get_mut()
            .write_all(b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            .await
            .unwrap();
        let (status, _, _) = read_response(&mut conn).await;
        assert_eq!(status, 400);
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(receiver.count(), 0);
    }

    #[tokio::test]
    async fn filters_by_path_prefix_and_waits() {
        let receiver = Receiver::start().await;
        let client = client();
        for path in ["/a/1", "/b/1", "/a/2"] {
            client.post(receiver.url(path)).send().await.unwrap();
        }
        assert_eq!(receiver.wait_for(3, Duration::from_secs(1)).await.len(), 3);
        let on_a: Vec<_> = receiver
            .received_on("/a/")
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(on_a, ["/a/1", "/a/2"]);
    }

    #[tokio::test]
    #[should_panic(expected = "1 arrived")]
    async fn wait_for_panics_with_the_count() {
        let receiver = Receiver::start().await;
        client().post(receiver.url("/h")).send().await.unwrap();
        receiver.wait_for(2, Duration::from_millis(100)).await;
    }
}
