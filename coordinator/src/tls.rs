//! Built-in TLS: the certificate chain and private key (PEM files, as
//! `--tls-cert` and `--tls-key` name them) made into a rustls server
//! configuration at start, every bad file refused with the setting's name.

use crate::edge::TlsFiles;
use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The acceptor of TLS connections with the certificate in `files`.
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let pem = std::fs::read(&files.cert)
        .with_context(|| format!("tls_cert: cannot read {}", files.cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "tls_cert: {} is not a PEM certificate chain: {e}",
                files.cert.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls_cert: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        files.cert.display()
    );
    let pem = std::fs::read(&files.key)
        .with_context(|| format!("tls_key: cannot read {}", files.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        anyhow::anyhow!(
            "tls_key: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls: no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "tls_key: {} does not fit the certificate in {}: {e}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    // HTTP/1.1 only: the server speaks nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, cert: &str, key: &str) -> TlsFiles {
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    #[test]
    fn a_generated_certificate_and_key_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let f = files(dir.path(), &c.cert.pem(), &c.signing_key.serialize_pem());
        acceptor(&f).unwrap();
    }

    #[test]
    fn bad_paths_and_contents_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = c.cert.pem();
        let key = c.signing_key.serialize_pem();
        let err = |f: &TlsFiles| match acceptor(f) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        };

        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("key.pem"),
        };
        let e = err(&missing);
        assert!(e.starts_with("tls_cert") && e.contains("nope.pem"), "{e}");

        let e = err(&files(dir.path(), "not a certificate", &key));
        assert!(
            e.starts_with("tls_cert") && e.contains("no certificate"),
            "{e}"
        );

        let e = err(&files(dir.path(), &cert, "not a key"));
        assert!(
            e.starts_with("tls_key") && e.contains("no PEM private key"),
            "{e}"
        );

        let e = err(&files(
            dir.path(),
            &cert,
            &other.signing_key.serialize_pem(),
        ));
        assert!(
            e.starts_with("tls_key") && e.contains("does not fit"),
            "{e}"
        );
    }
}
