//! A PostgreSQL server of a test's own: a real cluster made with Debian's
//! `pg_createcluster` on a free port, that the test may stop and start without
//! disturbing the server every other test shares. Dropped with the test (`Drop`), and
//! `scripts/test.sh` drops any a killed run left behind (their names start with
//! [`NAME_PREFIX`]).

use std::process::Command;

/// Every scratch cluster's name starts with this.
pub const NAME_PREFIX: &str = "cc_scratch_";

pub struct ScratchPostgres {
    version: String,
    name: String,
    pub port: u16,
}

impl ScratchPostgres {
    /// Creates the cluster (trust authentication, as the shared server has) and starts
    /// it: about 3 s.
    pub fn start() -> Self {
        let version = installed_version();
        let name = format!("{NAME_PREFIX}{}", crate::unique_id());
        let port = free_port();
        let scratch = Self {
            version,
            name,
            port,
        };
        scratch.run(
            "pg_createcluster",
            &[
                &scratch.version,
                &scratch.name,
                "--port",
                &port.to_string(),
                "--",
                "--auth=trust",
            ],
        );
        scratch.start_again();
        scratch
    }

    /// The URL of its `postgres` database, as superuser.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctlcluster … stop` in fast mode (the default): sessions are ended, the
    /// server shuts down cleanly. Returns when it has stopped.
    pub fn stop(&self) {
        self.ctl("stop");
    }

    pub fn start_again(&self) {
        self.ctl("start");
    }

    fn ctl(&self, action: &str) {
        self.run("pg_ctlcluster", &[&self.version, &self.name, action]);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program} cannot run (Debian's postgresql-common): {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .output();
    }
}

/// The PostgreSQL major version installed (`/etc/postgresql/<version>`), the newest if
/// there are several.
fn installed_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql: is Debian's PostgreSQL installed?")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.parse::<u32>().is_ok())
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    versions
        .pop()
        .expect("no PostgreSQL version in /etc/postgresql")
}

/// A port nothing listens on now (the kernel's choice, released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
