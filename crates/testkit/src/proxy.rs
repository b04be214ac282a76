//! A TCP proxy in front of RabbitMQ that a test can cut and restore, to take the broker away
//! from one service without disturbing the other tests that share it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct BrokerProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl BrokerProxy {
    /// Starts forwarding a random local port to the test broker.
    pub async fn start() -> BrokerProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let accepting = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused in effect
                }
                let mut cuts = cuts.clone();
                // Only cuts after this connection began end it.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(crate::broker_addr()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        BrokerProxy { port, up, cut }
    }

    /// The broker URL through the proxy (credentials and vhost of the test broker).
    pub fn url(&self) -> String {
        crate::broker_url().replacen(
            &crate::broker_addr(),
            &format!("127.0.0.1:{}", self.port),
            1,
        )
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
