//! A test CA and the certificates it signs, made with the real `openssl` command line, the way
//! README's "MQTT over TLS" guide tells staff to make them (P-256 keys, subjectAltName on the
//! server, clientAuth on clients).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::run_with_timeout;

/// A CA in a directory: `ca.pem` and `ca.key`, and the certificates it has issued there.
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Creates a new CA (CN `name`) in `dir`, which must exist.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        TestCa {
            dir: dir.to_owned(),
        }
    }

    /// A CA whose `ca.pem` and `ca.key` are already in `dir` (one `pantau-collector init`
    /// made, copied there), to issue with it as an admin would with openssl.
    pub fn existing(dir: &Path) -> TestCa {
        assert!(dir.join("ca.pem").is_file() && dir.join("ca.key").is_file());
        TestCa {
            dir: dir.to_owned(),
        }
    }

    /// `ca.pem`.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate `<file>.pem` / `<file>.key` for `names` (DNS names or IP
    /// addresses, all in subjectAltName).
    pub fn server(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let alt_names: Vec<String> = names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{name}"),
                Err(_) => format!("DNS:{name}"),
            })
            .collect();
        let extensions = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            alt_names.join(",")
        );
        self.issue(file, names[0], &extensions)
    }

    /// A client certificate `<cn>.pem` / `<cn>.key` whose CN is `cn` (the agent id).
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        let extensions = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                          extendedKeyUsage=clientAuth\n";
        self.issue(cn, cn, extensions)
    }

    /// Revokes `<file>.pem` with `openssl ca` as README's guide does, and writes the CRL
    /// `ca.crl`, which it returns.
    pub fn revoke(&self, file: &str) -> PathBuf {
        let database = self.dir.join("ca-db");
        std::fs::create_dir_all(&database).unwrap();
        std::fs::write(database.join("index.txt"), "").unwrap();
        std::fs::write(database.join("crlnumber"), "1000\n").unwrap();
        let config = "[ca]\ndefault_ca = pantau\n[pantau]\ndatabase = ca-db/index.txt\n\
                      crlnumber = ca-db/crlnumber\ncertificate = ca.pem\nprivate_key = ca.key\n\
                      default_md = sha256\ndefault_crl_days = 30\n";
        std::fs::write(self.dir.join("ca.cnf"), config).unwrap();
        let cert = format!("{file}.pem");
        openssl(&self.dir, &["ca", "-config", "ca.cnf", "-revoke", &cert]);
        openssl(
            &self.dir,
            &["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl"],
        );
        self.dir.join("ca.crl")
    }

    fn issue(&self, file: &str, cn: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let (key, csr, cert) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
        );
        let ext_file = format!("{file}.ext");
        std::fs::write(self.dir.join(&ext_file), extensions).unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                &ext_file,
                "-out",
                &cert,
            ],
        );
        (self.dir.join(cert), self.dir.join(key))
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = run_with_timeout(
        Command::new("openssl").args(args).current_dir(dir),
        b"",
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A self-signed certificate for localhost and 127.0.0.1 in `dir`, made by openssl:
/// (`NAME.crt`, `NAME.key`).
pub fn self_signed_certificate(dir: &Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.crt")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    let out = run_with_timeout(
        Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            &key,
            "-out",
            &cert,
        ]),
        b"",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    (cert, key)
}
