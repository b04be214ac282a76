//! A TCP proxy in front of a local service (RabbitMQ, Postgres) that a test can cut and restore,
//! to take that service away from one stack without disturbing the other tests that share it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// The `host:port` of a URL such as `scheme://user:password@host:port/path`.
fn host_port(url: &str, default: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = after_scheme
        .split('/')
        .next()
        .unwrap_or(default)
        .rsplit_once('@')
        .map_or_else(
            || after_scheme.split('/').next().unwrap_or(default),
            |(_, hp)| hp,
        );
    if host_port.is_empty() {
        default.to_owned()
    } else {
        host_port.to_owned()
    }
}

/// Forwards a random local port to one `host:port`.
pub struct Proxy {
    pub port: u16,
    target: String,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

/// The proxy the broker tests have always used: [`Proxy::start`] points it at the test broker.
pub type BrokerProxy = Proxy;

impl Proxy {
    /// Starts forwarding a random local port to the test broker.
    pub async fn start() -> Proxy {
        Self::to(crate::broker_addr()).await
    }

    /// Starts forwarding a random local port to the test database server.
    pub async fn to_database() -> Proxy {
        Self::to(host_port(&crate::admin_url(), "127.0.0.1:5432")).await
    }

    /// Starts forwarding a random local port to `target` (`host:port`).
    pub async fn to(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let accepting = up.clone();
        let upstream_addr = target.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused in effect
                }
                let mut cuts = cuts.clone();
                // Only cuts after this connection began end it.
                cuts.borrow_and_update();
                let upstream_addr = upstream_addr.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(upstream_addr).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            target,
            up,
            cut,
        }
    }

    /// `url` with its `host:port` (the proxy's target) replaced by the proxy's.
    pub fn through(&self, url: &str) -> String {
        url.replacen(&self.target, &format!("127.0.0.1:{}", self.port), 1)
    }

    /// The broker URL through the proxy (credentials and vhost of the test broker).
    pub fn url(&self) -> String {
        self.through(&crate::broker_url())
    }

    /// The URL of the test database `name` through the proxy.
    pub fn database_url(&self, name: &str) -> String {
        self.through(&crate::db_url(name))
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
