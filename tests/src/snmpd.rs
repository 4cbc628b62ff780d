//! A real SNMP agent for tests: Debian's net-snmp `snmpd` on a free loopback UDP port with a
//! v2c community and an SNMPv3 user (SHA + AES), everything in a temp dir; `snmpget` to read
//! the same OIDs the agent reports; and Debian's prometheus-snmp-exporter 0.21 as the reference
//! for names, types and labels (RECIPES.md, "Devices without an agent").

use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{
    ChildGuard, NotReady, port_accepts, run_with_timeout, start_on_free_port, wait_ready,
};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The v2c community the test snmpd accepts from 127.0.0.1 (besides `public`, which
/// snmp_exporter's `if_mib` module uses by default).
pub const SNMP_COMMUNITY: &str = "pantau-test";
/// The SNMPv3 user, with SHA authentication and AES privacy.
pub const SNMP_V3_USER: &str = "pantau";
pub const SNMP_V3_AUTH_PASSWORD: &str = "rahasia-auth";
pub const SNMP_V3_PRIVACY_PASSWORD: &str = "rahasia-priv";

/// A running snmpd.
pub struct Snmpd {
    // Dropped before the dir.
    child: ChildGuard,
    port: u16,
    _dir: TempDir,
}

/// A UDP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("bind a UDP socket on 127.0.0.1:0")
        .port()
}

impl Snmpd {
    pub fn start() -> Snmpd {
        let dir = tempfile::Builder::new()
            .prefix("pantau-snmpd-")
            .tempdir()
            .expect("create a temp dir for snmpd");
        let path = dir.path().to_owned();
        // Not in the persistent dir: snmpd keeps its own state there in a file of the same name.
        fs::create_dir_all(path.join("conf")).expect("create snmpd's config dir");
        let conf = path.join("conf/snmpd.conf");
        fs::write(
            &conf,
            format!(
                "rocommunity {SNMP_COMMUNITY} 127.0.0.1\nrocommunity public 127.0.0.1\n\
                 createUser {SNMP_V3_USER} SHA \"{SNMP_V3_AUTH_PASSWORD}\" AES \"{SNMP_V3_PRIVACY_PASSWORD}\"\n\
                 rouser {SNMP_V3_USER} priv\n"
            ),
        )
        .expect("write snmpd.conf");
        fs::create_dir_all(path.join("mibs")).expect("create an empty MIB dir");
        fs::create_dir_all(path.join("state")).expect("create snmpd's persistent dir");
        let mut attempt = 0;
        let (child, port) = loop {
            attempt += 1;
            let port = free_udp_port();
            let mut command = Command::new("snmpd");
            command
                .args(["-f", "-Lo", "-C", "-c"])
                .arg(&conf)
                .arg("-p")
                .arg(path.join("snmpd.pid"))
                .arg(format!("udp:127.0.0.1:{port}"));
            quiet_snmp_env(&mut command, &path);
            let mut child = ChildGuard::spawn("snmpd", &mut command, &path);
            let ready = wait_ready(&mut child, START_TIMEOUT, || {
                snmpget(
                    port,
                    &["-v2c", "-c", SNMP_COMMUNITY],
                    "1.3.6.1.2.1.1.3.0",
                    &path,
                )
                .is_some()
            });
            match ready {
                Ok(()) => break (child, port),
                // snmpd says "Error opening specified endpoint" when the port was taken.
                Err(NotReady::PortTaken) if attempt < 3 => continue,
                Err(NotReady::PortTaken) => panic!("snmpd: no free UDP port in 3 tries"),
            }
        };
        Snmpd {
            child,
            port,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `snmpget -v2c` of one numeric OID, as a number (Counter64, INTEGER, Gauge, TimeTicks).
    pub fn get_v2c(&self, oid: &str) -> f64 {
        self.get(&["-v2c", "-c", SNMP_COMMUNITY], oid)
    }

    /// `snmpget -v3` (authPriv, SHA + AES) of one numeric OID, as a number.
    pub fn get_v3(&self, oid: &str) -> f64 {
        self.get(
            &[
                "-v3",
                "-l",
                "authPriv",
                "-u",
                SNMP_V3_USER,
                "-a",
                "SHA",
                "-A",
                SNMP_V3_AUTH_PASSWORD,
                "-x",
                "AES",
                "-X",
                SNMP_V3_PRIVACY_PASSWORD,
            ],
            oid,
        )
    }

    fn get(&self, auth: &[&str], oid: &str) -> f64 {
        let dir = tempfile::tempdir().expect("temp dir for snmpget");
        let text = snmpget(self.port, auth, oid, dir.path())
            .unwrap_or_else(|| panic!("snmpget {oid} failed\n{}", self.child.logs()));
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("snmpget {oid}: not a number: {text:?}"))
    }

    pub fn logs(&self) -> String {
        self.child.logs()
    }
}

/// No MIB files are installed (Debian keeps them in non-free): load none and say nothing.
fn quiet_snmp_env(command: &mut Command, dir: &Path) {
    command
        .env("MIBS", "")
        .env("MIBDIRS", dir.join("mibs"))
        .env("SNMP_PERSISTENT_DIR", dir.join("state"))
        .env("SNMPCONFPATH", dir.join("mibs"));
}

/// The value of one OID (`-Oqv`: value only; `-Ot`: TimeTicks as a number), or None on failure.
fn snmpget(port: u16, auth: &[&str], oid: &str, dir: &Path) -> Option<String> {
    let mut command = Command::new("snmpget");
    command
        .args(auth)
        .args(["-Oqv", "-Ot", "-t", "1", "-r", "1"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(oid);
    quiet_snmp_env(&mut command, dir);
    let output = run_with_timeout(&mut command, b"", Duration::from_secs(10));
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}

/// Debian's prometheus-snmp-exporter, the reference for the `if_mib` series.
pub struct SnmpExporter {
    child: ChildGuard,
    port: u16,
    _dir: TempDir,
}

impl SnmpExporter {
    /// Starts the exporter with `tests/testdata/snmp_exporter_if_mib.yml` (Debian ships no
    /// snmp.yml; that file is upstream 0.21.0's `if_mib` module).
    pub fn start() -> SnmpExporter {
        let config =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/snmp_exporter_if_mib.yml");
        let dir = tempfile::Builder::new()
            .prefix("pantau-snmp-exporter-")
            .tempdir()
            .expect("create a temp dir for snmp_exporter");
        let (child, port) = start_on_free_port("prometheus-snmp-exporter", |port| {
            let mut command = Command::new("prometheus-snmp-exporter");
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"));
            let mut child = ChildGuard::spawn("snmp_exporter", &mut command, dir.path());
            wait_ready(&mut child, START_TIMEOUT, || port_accepts(port)).map(|()| (child, port))
        });
        SnmpExporter {
            child,
            port,
            _dir: dir,
        }
    }

    /// The exposition of `/snmp?module=if_mib&target=TARGET`.
    pub fn scrape_if_mib(&self, target: &str) -> String {
        let url = format!(
            "http://127.0.0.1:{}/snmp?module=if_mib&target={target}",
            self.port
        );
        match crate::http_get(&url) {
            Ok((200, body)) => body,
            other => panic!("snmp_exporter {url}: {other:?}\n{}", self.child.logs()),
        }
    }
}
