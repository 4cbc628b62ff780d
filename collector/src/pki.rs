//! The office CA: a small certificate authority made by `init`, whose key stays with root
//! (`/etc/pantau/ca/ca.key`), issuing the HTTPS and MQTT server certificate (`init`,
//! `cert renew`) and agents' client certificates (`agent add`). rcgen in-process, P-256
//! keys, so no openssl is needed on the host.
//!
//! A CA is loaded back from its PEM files for every issue: the issuer name and key identifier
//! written into a new certificate are copied from the CA certificate as it is on disk, byte for
//! byte, so certificates issued after a reload chain to the same CA that staff already trust.

use std::net::IpAddr;
use std::path::Path;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// How long a new CA is valid: longer than any server or client certificate it issues, and
/// long enough that staff trust it once.
const CA_DAYS: i64 = 3650;

/// A new certificate is valid from this long ago, so a device whose clock is a little behind
/// does not reject it as not yet valid.
const BACKDATE: Duration = Duration::hours(1);

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a usable certificate: {0}")]
    BadCertificate(String),
    #[error("'{0}' cannot be a DNS name in a certificate")]
    BadName(String),
}

/// A certificate authority: its certificate and private key, both PEM.
#[derive(Debug, Clone)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A new CA named `common_name`: P-256, valid 10 years, `CA:TRUE` with path length 0 (it
/// signs only end certificates), key usage keyCertSign and cRLSign.
pub fn new_ca(common_name: &str) -> Result<Ca, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl Ca {
    /// Reads a CA from its certificate and key files (PEM); checks that they fit.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let ca = Ca {
            cert_pem: read(cert_path)?,
            key_pem: read(key_path)?,
        };
        ca.signer()?;
        Ok(ca)
    }

    /// rcgen's issuer: params whose subject and key identifier are the CA certificate's own,
    /// and the CA's key, after checking the key is the certificate's.
    fn signer(&self) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
        let der = first_der(&self.cert_pem)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|error| PkiError::BadCertificate(error.to_string()))?;
        let key = KeyPair::from_pem(&self.key_pem)?;
        if x509.public_key().raw != key.public_key_der().as_slice() {
            return Err(PkiError::BadCertificate(
                "the CA key does not belong to the CA certificate".to_owned(),
            ));
        }
        if !x509.is_ca() {
            return Err(PkiError::BadCertificate(
                "the CA certificate is not a CA (no basicConstraints CA:TRUE)".to_owned(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for attribute in x509.subject().iter_attributes() {
            let text = attribute
                .as_str()
                .map_err(|error| PkiError::BadCertificate(format!("CA subject: {error}")))?;
            let value =
                match attribute.attr_value().tag() {
                    Tag::PrintableString => DnValue::PrintableString(text.try_into().map_err(
                        |error: rcgen::Error| PkiError::BadCertificate(error.to_string()),
                    )?),
                    Tag::Ia5String => {
                        DnValue::Ia5String(text.try_into().map_err(|error: rcgen::Error| {
                            PkiError::BadCertificate(error.to_string())
                        })?)
                    }
                    _ => DnValue::Utf8String(text.to_owned()),
                };
            let oid: Vec<u64> = attribute
                .attr_type()
                .iter()
                .ok_or_else(|| PkiError::BadCertificate("CA subject: odd OID".to_owned()))?
                .collect();
            params
                .distinguished_name
                .push(DnType::from_oid(&oid), value);
        }
        // The authority key identifier of what it issues must equal the CA's subject key
        // identifier, whatever method made that.
        for extension in x509.extensions() {
            if let ParsedExtension::SubjectKeyIdentifier(id) = extension.parsed_extension() {
                params.key_identifier_method = KeyIdMethod::PreSpecified(id.0.to_vec());
            }
        }
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = params.self_signed(&key)?;
        Ok((issuer, key))
    }

    /// SHA-256 of the CA certificate (DER), as `AB:CD:...`: what staff compare when they
    /// install the CA on a phone or PC.
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        use sha2::Digest;
        let der = first_der(&self.cert_pem)?;
        let digest = sha2::Sha256::digest(&der);
        Ok(digest
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect::<Vec<_>>()
            .join(":"))
    }
}

/// A server certificate and its new key (both PEM) for `dns_names` and `ip_addresses`
/// (subjectAltName; the common name is the first of them), serverAuth, valid `days`.
pub fn issue_server(
    ca: &Ca,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
    days: u32,
) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let common_name = dns_names
        .first()
        .cloned()
        .or_else(|| ip_addresses.first().map(IpAddr::to_string))
        .ok_or_else(|| PkiError::BadName(String::new()))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for name in dns_names {
        let name = name
            .as_str()
            .try_into()
            .map_err(|_| PkiError::BadName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for address in ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*address));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue(ca, params, days)
}

/// A client certificate and its new key (both PEM) with `common_name`, clientAuth, valid
/// `days`.
pub fn issue_client(ca: &Ca, common_name: &str, days: u32) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(ca, params, days)
}

fn issue(ca: &Ca, mut params: CertificateParams, days: u32) -> Result<(String, String), PkiError> {
    let (issuer, issuer_key) = ca.signer()?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, i64::from(days));
    let cert = params.signed_by(&key, &issuer, &issuer_key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Valid from a little before now for `days`, with a random positive 128-bit serial (RFC 5280:
/// unique per CA, at most 20 octets), so a renewed certificate is told apart from the old.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(days);
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

fn first_der(cert_pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|error| PkiError::BadCertificate(error.to_string()))
}

/// What renewal and the expiry metric need to know of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The serial number, hex.
    pub serial: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// The first certificate of a PEM text, read.
pub fn inspect(cert_pem: &str) -> Result<CertInfo, PkiError> {
    let der = first_der(cert_pem)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|error| PkiError::BadCertificate(error.to_string()))?;
    let mut info = CertInfo {
        not_after: x509.validity().not_after.timestamp(),
        serial: x509.raw_serial_as_string(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
    };
    let names = x509
        .subject_alternative_name()
        .map_err(|error| PkiError::BadCertificate(error.to_string()))?;
    for name in names.iter().flat_map(|names| &names.value.general_names) {
        match name {
            GeneralName::DNSName(name) => info.dns_names.push((*name).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => info.ip_addresses.push(IpAddr::from(
                    <[u8; 4]>::try_from(*bytes).unwrap_or_default(),
                )),
                16 => info.ip_addresses.push(IpAddr::from(
                    <[u8; 16]>::try_from(*bytes).unwrap_or_default(),
                )),
                _ => {}
            },
            _ => {}
        }
    }
    Ok(info)
}

/// notAfter of the first certificate in `cert_pem`, Unix seconds.
// For the enrolment branch; tested here.
#[allow(dead_code)]
pub fn not_after(cert_pem: &str) -> Result<i64, PkiError> {
    inspect(cert_pem).map(|info| info.not_after)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::{RootCertStore, crypto::ring::default_provider};
    use rustls_pki_types::{ServerName, UnixTime};

    use super::*;

    fn roots(ca: &Ca) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(first_der(&ca.cert_pem).unwrap()).unwrap();
        Arc::new(roots)
    }

    #[test]
    fn a_server_certificate_chains_to_its_ca_for_every_name() {
        let ca = new_ca("Pantau CA test").unwrap();
        let names = vec!["pantau.kantor.lan".to_owned(), "pantau".to_owned()];
        let addresses: Vec<IpAddr> = vec!["192.168.1.10".parse().unwrap(), "::1".parse().unwrap()];
        let (cert_pem, key_pem) = issue_server(&ca, &names, &addresses, 397).unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(&ca),
            Arc::new(default_provider()),
        )
        .build()
        .unwrap();
        let leaf = first_der(&cert_pem).unwrap();
        for name in ["pantau.kantor.lan", "pantau", "192.168.1.10", "::1"] {
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|error| panic!("{name}: {error}"));
        }
        let other = ServerName::try_from("elsewhere.lan").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
                .is_err()
        );
        let stranger = new_ca("Pantau CA test").unwrap();
        let foreign = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(&stranger),
            Arc::new(default_provider()),
        )
        .build()
        .unwrap();
        assert!(
            foreign
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from("pantau").unwrap(),
                    &[],
                    UnixTime::now()
                )
                .is_err(),
            "another CA of the same name does not vouch for it"
        );
        let info = inspect(&cert_pem).unwrap();
        assert_eq!(info.dns_names, names);
        assert_eq!(info.ip_addresses, addresses);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let days = (info.not_after - now) as f64 / 86_400.0;
        assert!((396.9..=397.1).contains(&days), "{days}");
        assert_eq!(not_after(&cert_pem).unwrap(), info.not_after);
    }

    #[test]
    fn a_loaded_ca_issues_certificates_that_chain_to_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("Pantau CA kantor").unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.path().join("ca.key"), &ca.key_pem).unwrap();
        let loaded = Ca::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key")).unwrap();
        let (first, _) = issue_server(&loaded, &["a.lan".to_owned()], &[], 30).unwrap();
        let (second, _) = issue_server(&loaded, &["a.lan".to_owned()], &[], 30).unwrap();
        assert_ne!(
            inspect(&first).unwrap().serial,
            inspect(&second).unwrap().serial
        );
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(&ca),
            Arc::new(default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_server_cert(
                &first_der(&second).unwrap(),
                &[],
                &ServerName::try_from("a.lan").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap();
        let ca_days = (not_after(&ca.cert_pem).unwrap()
            - OffsetDateTime::now_utc().unix_timestamp())
            / 86_400;
        assert!((3649..=3650).contains(&ca_days), "{ca_days}");
        assert_eq!(loaded.fingerprint().unwrap().len(), 32 * 3 - 1);

        let other = new_ca("other").unwrap();
        std::fs::write(dir.path().join("ca.key"), &other.key_pem).unwrap();
        let error = Ca::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key")).unwrap_err();
        assert!(error.to_string().contains("does not belong"), "{error}");
        let error = Ca::load(&dir.path().join("missing"), &dir.path().join("ca.key")).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn a_client_certificate_is_accepted_by_a_verifier_trusting_the_ca() {
        let ca = new_ca("Pantau CA test").unwrap();
        let (cert_pem, _) = issue_client(&ca, "aula-1", 825).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&ca),
            Arc::new(default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&first_der(&cert_pem).unwrap(), &[], UnixTime::now())
            .unwrap();
        let (server_pem, _) = issue_server(&ca, &["a.lan".to_owned()], &[], 30).unwrap();
        assert!(
            verifier
                .verify_client_cert(&first_der(&server_pem).unwrap(), &[], UnixTime::now())
                .is_err(),
            "a serverAuth certificate is no client certificate"
        );
        let der = first_der(&cert_pem).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = x509.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "aula-1");
    }

    #[test]
    fn a_server_certificate_needs_a_name() {
        let ca = new_ca("Pantau CA test").unwrap();
        assert!(issue_server(&ca, &[], &[], 30).is_err());
        assert!(matches!(
            issue_server(&ca, &["bad name é".to_owned()], &[], 30),
            Err(PkiError::BadName(_))
        ));
    }
}
