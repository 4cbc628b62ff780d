//! `pantau-collector login-limits`: asks the running collector which addresses and user names
//! its login limiter holds back, and with `--clear` lets them in again. It talks to the
//! collector's own API (`/api/v1/login-limits`, admins only) at the address of its config, so
//! what it shows is what the service enforces now; the admin's password is the first line of
//! standard input, as for `user add`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::config::CollectorConfig;

/// `login-limits`' options.
#[derive(Debug, Args)]
pub struct LoginLimitsArgs {
    /// The collector's config file (the one it runs with): where it listens, and whether it
    /// serves HTTPS.
    #[arg(long, value_name = "CONFIG")]
    config: Option<PathBuf>,
    /// An admin of api.users_file; the password is the first line of standard input.
    #[arg(long, value_name = "NAME")]
    admin: String,
    /// The CA that signed the collector's certificate, when it serves HTTPS.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Clear instead of listing: the address and/or user given, or everyone.
    #[arg(long)]
    clear: bool,
    #[arg(long, requires = "clear")]
    address: Option<IpAddr>,
    #[arg(long, requires = "clear")]
    user: Option<String>,
}

/// Runs the subcommand; returns what to print.
pub fn run(args: LoginLimitsArgs) -> Result<String, String> {
    let config = CollectorConfig::load(args.config.as_deref())
        .map_err(|error| format!("invalid config: {error}"))?;
    let https = config.http.tls_cert_file.is_some();
    let base = base_url(config.http.listen, https);
    let agent = agent(https, args.ca_file.as_deref())?;
    let password = crate::commands::read_password()?;
    let authorization = basic(&args.admin, &password);
    let answer = if args.clear {
        let mut query = Vec::new();
        if let Some(address) = args.address {
            query.push(format!("address={address}"));
        }
        if let Some(user) = &args.user {
            query.push(format!("user={}", encode(user)));
        }
        let url = format!("{base}/api/v1/login-limits?{}", query.join("&"));
        agent
            .delete(&url)
            .header("Authorization", &authorization)
            .call()
    } else {
        agent
            .get(&format!("{base}/api/v1/login-limits"))
            .header("Authorization", &authorization)
            .call()
    };
    let mut response = answer.map_err(|error| format!("{base}: {error}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|error| format!("{base}: reading the answer: {error}"))?;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if status != 200 {
        let why = json["error"].as_str().unwrap_or(body.as_str());
        return Err(format!("the collector answered {status}: {why}"));
    }
    if args.clear {
        return Ok(format!("cleared {}", json["cleared"]));
    }
    Ok(table(&json["limited"]))
}

/// The address to reach the collector at: its listen address, loopback for a wildcard.
fn base_url(listen: SocketAddr, https: bool) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, listen.port()))
}

fn agent(https: bool, ca_file: Option<&Path>) -> Result<ureq::Agent, String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(std::time::Duration::from_secs(30)));
    if https {
        let ca_file = ca_file.ok_or("the collector serves HTTPS: give --ca-file")?;
        let pem = std::fs::read(ca_file)
            .map_err(|error| format!("--ca-file '{}': {error}", ca_file.display()))?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!(
                "--ca-file '{}' holds no certificate",
                ca_file.display()
            ));
        }
        config = config.tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::new_with_certs(&certs))
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build(),
        );
    }
    Ok(config.build().into())
}

fn table(limited: &serde_json::Value) -> String {
    let rows = limited.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return "nobody is limited".to_owned();
    }
    let mut out = format!(
        "{:<8} {:<40} {:>8} {:>12}\n",
        "KIND", "KEY", "FAILURES", "RETRY_AFTER"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<8} {:<40} {:>8} {:>11}s\n",
            row["kind"].as_str().unwrap_or("?"),
            row["key"].as_str().unwrap_or("?"),
            row["failures"],
            row["retry_after_seconds"]
        ));
    }
    out.trim_end().to_owned()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        assert_eq!(
            base_url("0.0.0.0:9810".parse().unwrap(), false),
            "http://127.0.0.1:9810"
        );
        assert_eq!(
            base_url("[::]:9810".parse().unwrap(), true),
            "https://[::1]:9810"
        );
        assert_eq!(
            base_url("192.0.2.4:9810".parse().unwrap(), true),
            "https://192.0.2.4:9810"
        );
    }

    #[test]
    fn the_table_lists_each_entry() {
        let json = serde_json::json!([
            {"kind": "address", "key": "127.0.0.9", "failures": 10, "retry_after_seconds": 120}
        ]);
        let text = table(&json);
        assert!(text.contains("address  127.0.0.9"), "{text}");
        assert!(text.ends_with("120s"), "{text}");
        assert_eq!(table(&serde_json::json!([])), "nobody is limited");
        assert_eq!(encode("rina ä"), "rina%20%C3%A4");
    }
}
