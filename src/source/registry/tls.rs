//! The HTTP agent for one registry host, with its TLS material: the
//! system's roots plus the host's `certs.d` CA files (and client pair),
//! or no verification at all with `--tls-verify=false`, as in skopeo.

use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

use crate::error::{Error, Result};
use crate::source::registry::certs::{self, CertDirs};
use crate::source::registry::settings::Settings;

pub fn agent(host: &str, settings: &Settings, connect_timeout: Duration) -> Result<ureq::Agent> {
    let bad = |reason: String| Error::Registry {
        registry: host.to_string(),
        reason,
    };
    let files = certs::tls_files(
        &CertDirs::for_user(
            std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .as_deref(),
        ),
        host,
        settings.cert_dir.as_deref(),
    )
    .map_err(|e| bad(e.to_string()))?;
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    // The system's roots only where they are used: reading them means
    // reading every file of /etc/ssl/certs, tens of milliseconds from a cold
    // page cache, which skopeo does not spend with --tls-verify=false either.
    if settings.tls_verify {
        for cert in rustls_native_certs::load_native_certs().certs {
            roots.push(Certificate::from_der(cert.as_ref()).to_owned());
        }
    }
    for (path, pem) in &files.ca_pems {
        let before = roots.len();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert),
                Ok(_) => {}
                Err(e) => return Err(bad(format!("{}: {e}", path.display()))),
            }
        }
        if roots.len() == before {
            return Err(bad(format!("{}: holds no PEM certificate", path.display())));
        }
        tracing::debug!(file = %path.display(), "trusting the CA certificates in it");
    }
    let client_cert = match &files.client {
        None => None,
        Some((cert_path, cert_pem, key_path, key_pem)) => {
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(cert_pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if chain.is_empty() {
                return Err(bad(format!(
                    "{}: holds no PEM certificate",
                    cert_path.display()
                )));
            }
            let key = PrivateKey::from_pem(key_pem)
                .map_err(|e| bad(format!("{}: {e}", key_path.display())))?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
    };
    if roots.is_empty() && settings.tls_verify {
        tracing::warn!(
            "no CA certificates found on this system; HTTPS registries will fail to verify"
        );
    }
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots))
        .client_cert(client_cert)
        .disable_verification(!settings.tls_verify)
        .build();
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(connect_timeout))
        .user_agent(concat!("ocimount/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(ureq::Agent::new_with_config(config))
}
