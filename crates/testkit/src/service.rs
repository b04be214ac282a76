//! A service binary run as an operator runs it: its own database, broker prefix and port,
//! started with `serve`, stopped with SIGTERM.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::{Stack, eventually};

/// `bin` with none of the caller's `WAYBILL_*` settings, so a test says exactly what it sets.
pub fn command(bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WAYBILL_")) {
        cmd.env_remove(k);
    }
    cmd
}

/// A port nothing listens on right now, for a process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub async fn wait_listening(port: u16, what: &str) {
    let ready = eventually(Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    assert!(ready.is_some(), "{what} did not listen on {port}");
}

/// A running service process.
pub struct ServiceProcess {
    pub base: String,
    pub env: Vec<(String, String)>,
    bin: String,
    child: Option<Child>,
    _stack: Stack,
}

impl ServiceProcess {
    /// Starts `bin serve` on a stack of its own and waits until it listens.
    pub async fn start(bin: &str) -> ServiceProcess {
        let stack = Stack::builder().start().await;
        let port = free_port();
        let child = stack
            .command(bin, port)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_listening(port, bin).await;
        ServiceProcess {
            base: format!("http://127.0.0.1:{port}"),
            env: stack.env(port),
            bin: bin.to_owned(),
            child: Some(child),
            _stack: stack,
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
