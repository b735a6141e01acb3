//! TLS: the server's certificate and key, and the HTTPS clients that reach peers, each trusting
//! the public roots or a peer's own CA.
//!
//! Everything here is built from bytes the snapshot already read (so what is hashed into the
//! config hash is exactly what is served); nothing here touches the filesystem.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The HTTP client of the relay and the CLI: HTTP/1.1 over plain TCP or rustls.
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why TLS material could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A PEM file holds no certificate.
    #[error("no PEM certificate in it")]
    NoCertificate,
    /// A PEM file could not be read as what it should hold.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("{0}")]
    Rustls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; at least one.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// The server's TLS config from its certificate chain and key (PEM), HTTP/1.1 only.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Pem(format!("no private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whom a TLS client trusts: every client the inbox makes (the relay's, the CLI's, the
/// PostgreSQL store's) is built by [`client_config_for`] from one of these.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The public (webpki) roots.
    PublicRoots,
    /// Only the CA certificates in this PEM, as `curl --cacert` does.
    Ca(&'a [u8]),
    /// Any certificate: encrypt, and know the server by other means (libpq's
    /// `sslmode=require`). Signatures are still checked, so the session is the server's.
    AnyCertificate,
}

/// The rustls client config for `trust`, TLS 1.2 and 1.3.
pub fn client_config_for(trust: Trust<'_>) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let config = match trust {
        Trust::PublicRoots => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Ca(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(pem)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::AnyCertificate => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// A client that trusts the public (webpki) roots.
pub fn client() -> HttpsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    build(https)
}

/// A client that trusts only the CA certificates in `ca_pem`, as `curl --cacert` does: for a
/// peer (or this inbox) whose certificate a private CA signed, or that is self-signed.
pub fn client_trusting(ca_pem: &[u8]) -> Result<HttpsClient, TlsError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_pem)?)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(build(https))
}

/// The rustls client config that trusts only the CA certificates in `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    client_config_for(Trust::Ca(ca_pem))
}

fn build(https: hyper_rustls::HttpsConnector<HttpConnector>) -> HttpsClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// [`Trust::AnyCertificate`]'s verifier: any certificate passes; the handshake's signatures are
/// still verified with it.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
