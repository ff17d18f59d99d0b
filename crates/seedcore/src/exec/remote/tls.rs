//! TLS for `rediss://` URLs: rustls (the `ring` provider), the system's
//! trust roots, and the files of [`RemoteConfig`]'s TLS settings.
//!
//! * Trust: the system's roots, plus the certificates of
//!   [`RemoteConfig::tls_ca_file`] where one is set. The Redis client
//!   takes its roots as one PEM text that replaces the system's, so the
//!   system's roots are written back as PEM after the CA file: a CA file
//!   adds trust, it never narrows it.
//! * Identity (mutual TLS): [`RemoteConfig::tls_client_cert`], a PEM
//!   certificate chain and its private key. The key's bytes never reach
//!   a message.
//! * Certificate checks cannot be turned off: a `rediss://…/#insecure`
//!   URL is refused with [`RemoteError::BadUrl`]; a server with a private
//!   or self-signed certificate is trusted through the CA file instead.
//! * The files are read and checked once, when the client or worker
//!   starts: a missing, unreadable or malformed file is a
//!   [`RemoteError::BadSetting`] naming it. A failed handshake is a
//!   [`RemoteError::Connect`] with rustls's reason.

use super::{RemoteConfig, RemoteError};
use base64::Engine as _;
use redis::{Client, ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::path::Path;

/// A client for a `rediss://` URL (`url` is its redacted form, for
/// messages), with the trust roots and identity of `cfg`.
pub(crate) fn client(cfg: &RemoteConfig, url: &str) -> Result<Client, RemoteError> {
    let bad_url = |reason: String| RemoteError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let info = cfg
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| bad_url(e.to_string()))?;
    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        return Err(bad_url(
            "`#insecure` (no certificate checks) is not supported; trust the server's \
             certificate with RemoteConfig::tls_ca_file (`seedcore worker --tls-ca-file`)"
                .into(),
        ));
    }
    // This build's provider, unless the application installed one already
    // (rustls deprecates `ring`'s for lacking post-quantum key exchange;
    // aws-lc-rs has it but needs a large C build).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = match &cfg.tls_ca_file {
        Some(path) => Some(roots_with(path)?),
        None => None,
    };
    let identity = match (&cfg.tls_client_cert_file, &cfg.tls_client_key_file) {
        (Some(cert), Some(key)) => Some(identity(cert, key)?),
        (None, None) => None,
        _ => return Err(RemoteError::BadSetting(CERT_AND_KEY.into())),
    };
    Client::build_with_tls(
        info,
        TlsCertificates {
            client_tls: identity,
            root_cert: roots,
        },
    )
    .map_err(|e| RemoteError::BadSetting(format!("TLS settings: {e}")))
}

/// The message for a client certificate without its key, or a key
/// without its certificate.
pub(crate) const CERT_AND_KEY: &str =
    "tls_client_cert_file and tls_client_key_file are set together (mutual TLS) or not at all";

/// The certificates of the CA file at `path`, then the system's roots, as
/// one PEM text.
fn roots_with(path: &Path) -> Result<Vec<u8>, RemoteError> {
    let what = "TLS CA file";
    let mut pem = read(path, what)?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad_file(path, what, &e))?;
        store.add(cert).map_err(|e| bad_file(path, what, &e))?;
    }
    if store.is_empty() {
        return Err(bad_file(path, what, &"it holds no PEM certificate"));
    }
    pem.push(b'\n');
    let system = rustls_native_certs::load_native_certs();
    for e in &system.errors {
        log::debug!("seedcore remote: reading the system's trust roots: {e}");
    }
    // Only those rustls accepts as trust anchors: one it refuses would
    // make the whole set fail to parse.
    for cert in system.certs {
        if RootCertStore::empty().add(cert.clone()).is_ok() {
            push_pem(&mut pem, &cert);
        }
    }
    Ok(pem)
}

/// The client certificate chain and key (mutual TLS), checked to belong
/// together.
fn identity(cert_path: &Path, key_path: &Path) -> Result<ClientTlsConfig, RemoteError> {
    let cert = read(cert_path, "TLS client certificate file")?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(cert_path, "TLS client certificate file", &e))?;
    if chain.is_empty() {
        return Err(bad_file(
            cert_path,
            "TLS client certificate file",
            &"it holds no PEM certificate",
        ));
    }
    let key = read(key_path, "TLS client key file")?;
    // A fixed reason: a parse error could quote the key's text.
    let parsed = PrivateKeyDer::from_pem_slice(&key).map_err(|_| {
        bad_file(
            key_path,
            "TLS client key file",
            &"it holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    rustls::ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain, parsed)
        .map_err(|e| {
            RemoteError::BadSetting(format!(
                "the TLS client certificate {} and key {} do not go together: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    Ok(ClientTlsConfig {
        client_cert: cert,
        client_key: key,
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, RemoteError> {
    std::fs::read(path).map_err(|e| {
        RemoteError::BadSetting(format!("cannot read the {what} {}: {e}", path.display()))
    })
}

fn bad_file(path: &Path, what: &str, e: &dyn std::fmt::Display) -> RemoteError {
    RemoteError::BadSetting(format!("bad {what} {}: {e}", path.display()))
}

/// Appends `cert` to `out` as a PEM block.
fn push_pem(out: &mut Vec<u8>, cert: &CertificateDer<'_>) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_block_reads_back_as_the_same_certificate() {
        let der = CertificateDer::from((0u8..=200).collect::<Vec<u8>>());
        let mut pem = Vec::new();
        push_pem(&mut pem, &der);
        push_pem(&mut pem, &der);
        let back: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, vec![der.clone(), der]);
    }

    #[test]
    fn bad_files_are_settings_that_name_the_file() {
        let dir = std::env::temp_dir().join(format!("seedcore-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let cfg = |c: RemoteConfig| client(&c, "rediss://127.0.0.1:1/").unwrap_err();
        let base = RemoteConfig::new("rediss://127.0.0.1:1/");
        let missing = dir.join("missing.pem");
        let e = cfg(base.clone().tls_ca_file(&missing));
        assert!(
            matches!(&e, RemoteError::BadSetting(m) if m.contains("missing.pem")),
            "{e}"
        );
        let e = cfg(base.clone().tls_ca_file(&empty));
        assert!(
            matches!(&e, RemoteError::BadSetting(m) if m.contains("empty.pem") && m.contains("no PEM")),
            "{e}"
        );
        let e = cfg(base.clone().tls_client_cert(&empty, &missing));
        assert!(
            matches!(&e, RemoteError::BadSetting(m) if m.contains("empty.pem")),
            "{e}"
        );
        let e = cfg(RemoteConfig::new("rediss://:pw@127.0.0.1:1/#insecure"));
        assert!(
            matches!(&e, RemoteError::BadUrl { reason, .. } if reason.contains("#insecure")),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
