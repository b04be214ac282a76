//! A real HTTP server that tests point webhooks at, on hyper, so the wire protocol (framing,
//! keep-alive, chunked bodies, malformed requests) is hyper's and the receiver only decides what
//! to answer. It drives each connection itself, which is what lets a test drop a connection
//! without answering: a framework server would always send something.
//!
//! Requests hyper cannot parse are answered 400 by hyper and never reach the script or the
//! record, since no sender under test should ever produce one.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{HeaderName, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::{JoinHandle, JoinSet},
};

/// Largest request body accepted, answered 413 beyond.
const MAX_BODY: usize = 16 * 1024 * 1024;

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
    /// Header names lower-cased, in the order sent (repeats of one name kept together).
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
    fn decide(&self, mut request: Received) -> Reply {
        let reply = {
            let mut state = self.state();
            let reply = match state.script.pop_front() {
                Some(reply) => reply,
                None => state.default.clone(),
            };
            request.status = reply.status_code();
            state.received.push(request);
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

/// The answer to one request: a response, or the order to drop the connection.
enum Answer {
    Respond(Response<Full<Bytes>>),
    Drop,
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    // Responses are small and written at once, so Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    // hyper answers every request it is handed; a scripted drop instead ends this task, which
    // drops the socket (FIN, the request having been read in full) with nothing written.
    let (drop_tx, mut drop_rx) = tokio::sync::mpsc::channel::<()>(1);
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = shared.clone();
        let drop_tx = drop_tx.clone();
        async move {
            match answer(request, &shared).await {
                Answer::Respond(response) => Ok::<_, Infallible>(response),
                Answer::Drop => {
                    let _ = drop_tx.send(()).await;
                    // Never answered: the connection task ends first.
                    std::future::pending().await
                }
            }
        }
    });
    let served = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = served => {}
        _ = drop_rx.recv() => {}
    }
}

async fn answer(request: Request<Incoming>, shared: &Shared) -> Answer {
    let (head, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Answer::Respond(plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
        }
        // The client went away mid-body: nobody to answer.
        Err(_) => return Answer::Drop,
    };
    let path = head
        .uri
        .path_and_query()
        .map_or_else(|| head.uri.to_string(), |pq| pq.as_str().to_owned());
    let headers = head
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let reply = shared.decide(Received {
        method: head.method.as_str().to_owned(),
        path,
        headers,
        body: body.to_vec(),
        at: Instant::now(),
        status: None,
    });
    let Reply::Respond {
        status,
        headers,
        body,
        delay,
    } = reply
    else {
        return Answer::Drop;
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Answer::Respond(response(status, &headers, body))
}

fn response(status: u16, headers: &[(String, String)], body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    // A script names statuses as numbers; one outside 100..=999 is a mistake in the test.
    *response.status_mut() = StatusCode::from_u16(status)
        .unwrap_or_else(|_| panic!("Reply::status({status}) is not an HTTP status"));
    for (name, value) in headers {
        // hyper frames every response from its body; a second length would be ambiguous.
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        response.headers_mut().append(
            HeaderName::try_from(name.as_str()).expect("a scripted header name"),
            HeaderValue::try_from(value.as_str()).expect("a scripted header value"),
        );
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

    /// Writes `request` on a raw connection and reads the response: status and headers.
    async fn exchange(
        conn: &mut BufReader<TcpStream>,
        request: &[u8],
    ) -> (u16, Vec<(String, String)>) {
        conn.get_mut().write_all(request).await.unwrap();
        let (status, headers, _) = read_response(conn).await;
        (status, headers)
    }

    /// Whether the receiver has closed `conn` with nothing more to read.
    async fn closed(conn: &mut BufReader<TcpStream>) -> bool {
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        rest.is_empty()
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
        let (status, headers) = exchange(
            &mut conn,
            b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert_eq!(status, 200);
        assert!(!headers.iter().any(|(n, _)| n == "connection"));
        let (status, _) = exchange(
            &mut conn,
            b"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200);
        assert!(closed(&mut conn).await, "closed after Connection: close");

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
        let (status, _) = exchange(
            &mut conn,
            b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        )
        .await;
        assert_eq!(status, 400);
        assert!(closed(&mut conn).await);
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
