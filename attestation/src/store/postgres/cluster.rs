//! A throwaway PostgreSQL cluster for the tests and `cvm-attest bench serve --store postgres`: `initdb` in a
//! temporary directory, `postgres` listening on a Unix socket in that directory (and, when asked, on
//! 127.0.0.1 with TLS and passwords), stopped and removed when dropped. PostgreSQL refuses to run as root, so
//! when this process is root the cluster runs as `nobody` in a directory it owns.
//!
//! The binaries are found through `CVM_PG_BIN`, Debian's `/usr/lib/postgresql/<version>/bin` (newest
//! version), or `PATH`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The cluster's superuser (the services connect as this role).
pub const SUPERUSER: &str = "cvm";

/// Errors starting or running a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL binaries were found.
    #[error(
        "PostgreSQL not found (no initdb in $CVM_PG_BIN, /usr/lib/postgresql/*/bin or PATH): install it \
         (Debian: apt-get install postgresql)"
    )]
    NotInstalled,
    /// A step failed.
    #[error("{step}: {message}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
}

fn step(step: &'static str, message: impl std::fmt::Display) -> ClusterError {
    ClusterError::Step {
        step,
        message: message.to_string(),
    }
}

/// The directory of `initdb`, `pg_ctl` and `postgres`, if PostgreSQL is installed.
pub fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CVM_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    })
}

/// The uid and gid of `nobody` from /etc/passwd.
fn nobody() -> Result<(u32, u32), ClusterError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| step("read /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            match f.as_slice() {
                ["nobody", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .ok_or_else(|| step("find the user nobody", "not in /etc/passwd"))
}

/// Whether this process runs as root.
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// What to set up besides the Unix socket.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also listen on 127.0.0.1 with TLS, this certificate chain and key (PEM), and require a password
    /// (scram-sha-256) for connections over it.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    running: bool,
}

impl Cluster {
    /// `initdb` and start a cluster.
    pub fn start(options: &Options) -> Result<Cluster, ClusterError> {
        let bin = find_bin().ok_or(ClusterError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("cvm-pg-")
            .tempdir()
            .map_err(|e| step("temporary directory", e))?;
        let owner = if is_root() { Some(nobody()?) } else { None };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| step("chown the cluster directory", e))?;
        }
        let data = dir.path().join("data");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| step("find a free port", e))?
            .port();
        let mut cluster = Cluster {
            bin,
            dir,
            data,
            port,
            owner,
            running: false,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data.display().to_string(),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let mut conf = format!(
            "unix_socket_directories = '{}'\nport = {port}\nmax_connections = 200\n",
            cluster.dir.path().display()
        );
        if let Some((cert, key)) = &options.tls {
            // The server reads its key as its own user, mode 0600.
            let cert_copy = cluster.dir.path().join("server.pem");
            let key_copy = cluster.dir.path().join("server.key");
            std::fs::copy(cert, &cert_copy).map_err(|e| step("copy the TLS certificate", e))?;
            std::fs::copy(key, &key_copy).map_err(|e| step("copy the TLS key", e))?;
            for f in [&cert_copy, &key_copy] {
                std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(|e| step("chmod the TLS files", e))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(f, Some(uid), Some(gid))
                        .map_err(|e| step("chown the TLS files", e))?;
                }
            }
            conf.push_str(&format!(
                "listen_addresses = '127.0.0.1'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n\
                 password_encryption = 'scram-sha-256'\n",
                cert_copy.display(),
                key_copy.display()
            ));
            let hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n";
            std::fs::write(cluster.data.join("pg_hba.conf"), hba)
                .map_err(|e| step("write pg_hba.conf", e))?;
        } else {
            conf.push_str("listen_addresses = ''\n");
        }
        let auto = cluster.data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&auto).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&auto, existing).map_err(|e| step("write postgresql.auto.conf", e))?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// Run a PostgreSQL program as the cluster's owner.
    fn run(&self, program: &'static str, args: &[&str]) -> Result<Output, ClusterError> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().map_err(|e| step(program, e))?;
        if !out.status.success() {
            return Err(step(
                program,
                format!(
                    "{}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        Ok(out)
    }

    /// Start the server (after [`Cluster::stop`]); returns once it accepts connections.
    pub fn start_server(&mut self) -> Result<(), ClusterError> {
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        self.running = true;
        Ok(())
    }

    /// Stop the server (fast shutdown: sessions are ended, committed work is kept).
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )?;
        self.running = false;
        Ok(())
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port (of the socket's name, and of 127.0.0.1 with TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of database `db` over the Unix socket, as `[store.postgres] url` takes it.
    pub fn socket_url(&self, db: &str) -> String {
        let dir: String = self
            .socket_dir()
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('/', "%2F");
        format!("postgres://{SUPERUSER}@{dir}:{}/{db}", self.port)
    }

    /// Run SQL with `psql` on database `db` (over the socket, as the superuser); returns its output
    /// (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, ClusterError> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| step("psql", e))?;
        if !out.status.success() {
            return Err(step(
                "psql",
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Create database `name`.
    pub fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))
            .map(|_| ())
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// CPU seconds (user + system) of the server: the postmaster with its exited children, and every live
    /// child (the sessions, the WAL writer, the checkpointer...).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.pid()?;
        let mut total = proc_cpu(pid, true)?;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if proc_parent(child) == Some(pid) {
                total += proc_cpu(child, false).unwrap_or(0.0);
            }
        }
        Some(total)
    }
}

/// The fields after the command of /proc/PID/stat (the command may contain spaces).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn proc_parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// utime + stime (and cutime + cstime when `children`) of a process, in seconds (USER_HZ is 100).
fn proc_cpu(pid: u32, children: bool) -> Option<f64> {
    let f = stat_fields(pid)?;
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let mut ticks = field(11)? + field(12)?;
    if children {
        ticks += field(13)? + field(14)?;
    }
    Some(ticks / 100.0)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.run(
                "pg_ctl",
                &[
                    "-D",
                    &self.data.display().to_string(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
    }
}
