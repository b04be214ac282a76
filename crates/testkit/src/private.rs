//! Database and broker servers of one test's own, for tests that stop, restart or kill them: a
//! PostgreSQL cluster on a port of its own ([`PrivatePostgres`]), a RabbitMQ node with its own
//! name, ports and directories ([`PrivateRabbit`]), and three such nodes joined into a cluster
//! ([`RabbitCluster`]). The shared servers the rest of the suite uses are never touched. Each
//! lives in a directory under the system's temporary directory and is killed, and its directory
//! removed, when dropped, also when the test fails.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use diesel::sql_query;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::eventually;

/// How long a server has to start (both are slow to boot on a loaded two-core machine).
const BOOT: Duration = Duration::from_secs(90);

/// A fresh directory under the temporary directory, removed by [`Scratch`]'s drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "waybill-{what}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nothing uses now, outside the kernel's ephemeral range (32768 and up on Linux), so
/// that no client connection or `free_port` of another test takes it while its server is down
/// and the server can bind it again on restart. Never the same twice in one test process.
pub fn stable_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = 20000 + u16::from_le_bytes([uuid_byte(), uuid_byte()]) % 12000;
        if !given.contains(&port)
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_err()
        {
            given.push(port);
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

fn uuid_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `cmd` to its end, failing the test with its output when it fails.
fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL cluster of one test's own (`initdb`, `pg_ctl`) on a port of its own, trusting
/// local connections as `postgres`. PostgreSQL refuses to run as root: as root it runs as the
/// `postgres` user, in a directory that user owns.
pub struct PrivatePostgres {
    pub port: u16,
    bindir: PathBuf,
    data: PathBuf,
    dir: Scratch,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub async fn start() -> PrivatePostgres {
        let bindir = pg_bindir();
        let dir = Scratch::new("pg");
        if running_as_root() {
            let mut chown = Command::new("chown");
            chown.args(["postgres:", &dir.0.to_string_lossy()]);
            run_ok(chown, "chown the PostgreSQL directory to postgres");
        }
        let pg = PrivatePostgres {
            port: stable_port(),
            data: dir.0.join("data"),
            bindir,
            dir,
        };
        let mut initdb = pg.tool("initdb");
        initdb.arg("-D").arg(&pg.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_ok(initdb, "initdb");
        pg.resume().await;
        pg
    }

    /// A PostgreSQL program as the user that owns the cluster.
    fn tool(&self, name: &str) -> Command {
        let bin = self.bindir.join(name);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .env_remove("PGDATA")
            .env_remove("PGPORT");
        cmd
    }

    /// URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` with Waybill's migrations applied; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let mut admin = AsyncPgConnection::establish(&self.url("postgres"))
            .await
            .expect("connect to the private PostgreSQL");
        sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = self.url(name);
        waybill_store::migrate(&url)
            .await
            .expect("migrate the private database");
        url
    }

    /// Stops the server at once, as a crash would: connections drop, nothing is checkpointed
    /// (the next start recovers from the log).
    pub fn stop(&self) {
        let mut stop = self.tool("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        run_ok(stop, "pg_ctl stop");
    }

    /// Starts the server (again) and waits until it takes connections.
    pub async fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c max_connections=200",
            self.port,
            self.dir.0.display()
        );
        let mut start = self.tool("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.0.join("server.log"))
            .args(["-o", &options, "-w", "-t", "90", "start"]);
        run_ok(start, "pg_ctl start");
        let url = self.url("postgres");
        let up = eventually(BOOT, || {
            let url = url.clone();
            async move { AsyncPgConnection::establish(&url).await.ok().map(|_| ()) }
        })
        .await;
        assert!(up.is_some(), "the private PostgreSQL takes no connections");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let mut stop = self.tool("pg_ctl");
            stop.arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = stop.status();
        }
    }
}

/// Where the PostgreSQL server programs are: `pg_config --bindir`, else the newest of Debian's.
fn pg_bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "no PostgreSQL server programs (initdb); deploy/local/ensure-test-tools.sh installs them",
    )
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

/// A RabbitMQ node of one test's own: its own node name, AMQP and distribution ports, data,
/// log, configuration and plugins files, and Erlang cookie (all under its directory), listening
/// on loopback only. Started with the `rabbitmq-server` script in the foreground, so the child
/// is the node's Erlang VM.
pub struct PrivateRabbit {
    /// `name@localhost`.
    pub node: String,
    /// The AMQP port.
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// A node on its own removes its directory once its VM is gone.
    own_dir: Option<RabbitDir>,
}

impl PrivateRabbit {
    /// Starts a node and waits until it serves AMQP.
    pub async fn start() -> PrivateRabbit {
        let dir = RabbitDir::new("rabbit");
        let mut node = PrivateRabbit::in_dir(&dir, "n1");
        node.own_dir = Some(dir);
        node.wait_serving().await;
        node
    }

    /// A node in `dir`, started (serving is not waited for). Its files go under `dir/<id>`.
    fn in_dir(dir: &RabbitDir, id: &str) -> PrivateRabbit {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut node = PrivateRabbit {
            node: format!("wbt{suffix}{id}@localhost"),
            port: stable_port(),
            dist_port: stable_port(),
            dir: dir.0.0.join(id),
            child: None,
            own_dir: None,
        };
        std::fs::create_dir_all(&node.dir).unwrap();
        std::fs::write(
            node.dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{}\n\
                 # Loaded two-core machines: a node is not taken for dead too early.\n\
                 net_ticktime = 60\n",
                node.port
            ),
        )
        .unwrap();
        std::fs::write(node.dir.join("enabled_plugins"), "[].\n").unwrap();
        // Nothing from the machine's own rabbitmq-env.conf (its node name above all).
        std::fs::write(node.dir.join("rabbitmq-env.conf"), "").unwrap();
        node.resume();
        node
    }

    /// The environment of the node and of the tools that talk to it: the cookie is the one in
    /// the test's directory (`HOME`).
    fn env(&self, cmd: &mut Command) {
        let home = self.dir.parent().unwrap_or(&self.dir);
        cmd.env("HOME", home)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env_remove("RABBITMQ_NODENAME")
            .env_remove("ERL_FLAGS")
            .stdin(Stdio::null());
    }

    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(Path::new(RABBIT_BIN).join(name));
        self.env(&mut cmd);
        // What the VM writes where it runs (Mnesia's core dumps) stays in the node's directory.
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Starts the node's VM (again, after [`PrivateRabbit::stop`] or [`PrivateRabbit::kill`]);
    /// does not wait.
    fn resume(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("console.log"))
            .unwrap();
        let mut cmd = self.tool("rabbitmq-server");
        cmd.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.dir.join("node.pid"))
            // The script then execs the VM instead of waiting on it in the background: the child
            // is the VM, which a kill reaches.
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start rabbitmq-server"));
    }

    /// Starts the node again and waits until it serves AMQP.
    pub async fn restart(&mut self) {
        self.resume();
        self.wait_serving().await;
    }

    /// Waits until the node accepts AMQP connections.
    pub async fn wait_serving(&self) {
        wait_listening_for(self.port, BOOT, &self.node).await;
        let url = self.url();
        let up = eventually(BOOT, || {
            let url = url.clone();
            async move {
                let c = lapin::Connection::connect(&url, Default::default())
                    .await
                    .ok()?;
                let _ = c.close(200, "ready".into()).await;
                Some(())
            }
        })
        .await;
        assert!(up.is_some(), "{} serves no AMQP: {}", self.node, self.log());
    }

    /// The AMQP URL of this node (the default `guest` user, from loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl -n <node> args…`, which must succeed (off the async threads: it takes
    /// seconds).
    pub async fn ctl(&self, args: &[&str]) {
        let mut cmd = self.tool("rabbitmqctl");
        cmd.args(["-n", &self.node]).args(args);
        let what = format!("rabbitmqctl {}", args.join(" "));
        tokio::task::spawn_blocking(move || run_ok(cmd, &what))
            .await
            .unwrap();
    }

    /// What `rabbitmqctl -n <node> args…` prints, or why it failed: for a failure message.
    pub async fn ctl_output(&self, args: &[&str]) -> String {
        let mut cmd = self.tool("rabbitmqctl");
        cmd.args(["-n", &self.node]).args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await;
        match out {
            Ok(Ok(out)) => {
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr)
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Stops the node cleanly (`rabbitmqctl stop`) and waits for its VM to exit.
    pub async fn stop(&mut self) {
        self.ctl(&["stop"]).await;
        if let Some(mut child) = self.child.take() {
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Kills the node's VM (SIGKILL), as a crash of its machine would, and waits until its
    /// port is closed.
    pub fn kill(&mut self) {
        self.kill_vm();
        let closed = (0..200).any(|_| {
            let open = std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(100),
            )
            .is_ok();
            if open {
                std::thread::sleep(Duration::from_millis(50));
            }
            !open
        });
        assert!(closed, "{} still listens after SIGKILL", self.node);
    }

    fn kill_vm(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Should the VM not be the child (another start script), the pid it wrote down.
        let pid_file = self.dir.join("node.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = pid.trim().parse::<u32>()
        {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let dir = self.dir.parent().unwrap_or(&self.dir).to_string_lossy();
                String::from_utf8_lossy(&cmd).contains(dir.as_ref())
            });
            if ours {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = std::fs::remove_file(pid_file);
    }

    /// The end of the node's console output, for a failure message.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill_vm();
    }
}

/// The directory of a test's RabbitMQ nodes and their shared Erlang cookie (its `HOME`), removed
/// when dropped.
struct RabbitDir(Scratch);

impl RabbitDir {
    fn new(what: &str) -> RabbitDir {
        let dir = Scratch::new(what);
        let cookie = dir.0.join(".erlang.cookie");
        std::fs::write(&cookie, uuid::Uuid::new_v4().simple().to_string()).unwrap();
        // Erlang refuses a cookie others can read.
        std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))
            .unwrap();
        RabbitDir(dir)
    }
}

/// Waits until something accepts connections on `port`, for up to `timeout`.
async fn wait_listening_for(port: u16, timeout: Duration, what: &str) {
    let ready = eventually(timeout, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    assert!(ready.is_some(), "{what} did not listen on {port}");
}

/// Three RabbitMQ nodes on this machine joined into one cluster.
pub struct RabbitCluster {
    pub nodes: Vec<PrivateRabbit>,
    // Dropped after the nodes (fields drop in order).
    _dir: RabbitDir,
}

impl RabbitCluster {
    /// Starts three nodes and joins the second and third to the first.
    pub async fn start() -> RabbitCluster {
        let dir = RabbitDir::new("rabbit-cluster");
        // All three boot at once, then the second and the third join the first, one at a time.
        let nodes: Vec<PrivateRabbit> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|id| PrivateRabbit::in_dir(&dir, id))
            .collect();
        for node in &nodes {
            node.wait_serving().await;
        }
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]).await;
            node.ctl(&["join_cluster", &nodes[0].node]).await;
            node.ctl(&["start_app"]).await;
            node.wait_serving().await;
        }
        let cluster = RabbitCluster { nodes, _dir: dir };
        cluster.nodes[0]
            .ctl(&["await_online_nodes", "3", "--timeout", "90"])
            .await;
        cluster
    }

    /// Every node's URL, comma-separated, in node order: what `broker.url` takes for a cluster.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(PrivateRabbit::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
