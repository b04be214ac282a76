//! A service binary run as an operator runs it: its own database, broker prefix and port,
//! started with `serve`, stopped with SIGTERM.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::{DbGuard, broker_url, create_database, db_url, eventually};

/// `bin` with none of the caller's `WAYBILL_*` settings, so a test says exactly what it sets.
pub fn command(bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WAYBILL_")) {
        cmd.env_remove(k);
    }
    cmd
}

/// A running service process.
pub struct ServiceProcess {
    pub base: String,
    pub env: Vec<(String, String)>,
    bin: String,
    child: Option<Child>,
    _guard: DbGuard,
}

impl ServiceProcess {
    /// Starts `bin serve` and waits until it listens.
    pub async fn start(bin: &str) -> ServiceProcess {
        let db = create_database().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let prefix = format!("wbp{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut defaults =
            waybill_runtime::Settings::load_from(0, None, Vec::<(String, String)>::new()).unwrap();
        defaults.broker.prefix = prefix.clone();
        let topology = defaults.topology().unwrap();
        let guard = DbGuard {
            db: db.clone(),
            topology,
        };
        let env: Vec<(String, String)> = [
            ("WAYBILL_DATABASE__URL", db_url(&db)),
            ("WAYBILL_BROKER__URL", broker_url()),
            ("WAYBILL_BROKER__PREFIX", prefix),
            ("WAYBILL_HTTP__PORT", port.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let child = command(bin)
            .arg("serve")
            .envs(env.clone())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let addr = format!("127.0.0.1:{port}");
        let ready = eventually(Duration::from_secs(30), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.ok() }
        })
        .await;
        assert!(ready.is_some(), "{bin} did not listen");
        ServiceProcess {
            base,
            env,
            bin: bin.to_owned(),
            child: Some(child),
            _guard: guard,
        }
    }

    /// `bin token …` with this service's settings.
    pub fn token(&self, args: &[&str]) -> std::process::Output {
        command(&self.bin)
            .arg("token")
            .args(args)
            .envs(self.env.clone())
            .output()
            .unwrap()
    }

    /// Sends SIGTERM and waits (at most 20 s) for the exit; returns its status and everything
    /// it printed.
    pub async fn sigterm(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no exit within 20 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let out = child.wait_with_output().unwrap();
        (
            status,
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
