//! The TLS side of a probe: a client that completes the handshake whatever
//! certificate it is shown, and then records what it saw (subject, issuer,
//! SANs, expiry, whether it verifies) instead of failing, so that a probe
//! reports facts about the certificate rather than one opaque error.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::error::ProbeError;
use super::outcome::CertFacts;
use super::target::Target;

/// Which certificates a probe's TLS verification trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TrustRoots {
    /// The operating system's store (rustls-native-certs), loaded on the
    /// first TLS probe.
    #[default]
    System,
    /// Only the certificates of this PEM file (`--ca FILE`).
    PemFile(PathBuf),
}

/// How TLS targets are handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// What verification trusts.
    pub roots: TrustRoots,
    /// Report a certificate that does not verify as `tls-error` (`--verify`)
    /// instead of `open` with `verified: false`.
    pub require_verified: bool,
}

/// The probe's TLS client: one rustls configuration shared by all probes,
/// plus the verifier used to judge the recorded certificates.
pub(crate) struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    provider: Arc<CryptoProvider>,
    roots: TrustRoots,
    /// Built on first use: loading the system store reads hundreds of files,
    /// which a TCP-only sweep should not pay for.
    judge: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
    /// The certificates of the `--ca` file: a server that presents one of
    /// them as its own (a self-signed certificate) is trusted as pinned,
    /// as `openssl s_client -CAfile` trusts it.
    pinned: Vec<CertificateDer<'static>>,
}

impl TlsClient {
    pub(crate) fn new(options: &TlsOptions) -> Result<TlsClient, ProbeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let recorder = Arc::new(RecordingVerifier {
            algorithms: provider.signature_verification_algorithms,
        });
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(ProbeError::TlsSetup)?
            .dangerous()
            .with_custom_certificate_verifier(recorder)
            .with_no_client_auth();
        let client = TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            provider,
            roots: options.roots.clone(),
            judge: OnceLock::new(),
            pinned: Vec::new(),
        };
        let mut client = client;
        if let TrustRoots::PemFile(path) = &options.roots {
            // A bad --ca file is bad input: fail before probing anything.
            let (store, pinned) = load_pem_roots(path)?;
            client.pinned = pinned;
            let judge = client.build_judge(store, path.display().to_string());
            let _ = client.judge.set(judge);
        }
        Ok(client)
    }

    pub(crate) fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.connector
    }

    fn build_judge(
        &self,
        store: RootCertStore,
        source: String,
    ) -> Result<Arc<WebPkiServerVerifier>, String> {
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
            .build()
            .map_err(|e| format!("no usable trust roots in {source}: {e}"))
    }

    fn judge(&self) -> Result<Arc<WebPkiServerVerifier>, String> {
        self.judge
            .get_or_init(|| {
                let loaded = rustls_native_certs::load_native_certs();
                let mut store = RootCertStore::empty();
                let (_added, _ignored) = store.add_parsable_certificates(loaded.certs);
                self.build_judge(store, "the system store".to_string())
            })
            .clone()
    }

    /// The facts of a presented chain, judged against the trust roots and
    /// the name the probe used.
    pub(crate) fn facts(&self, chain: &[CertificateDer<'_>], name: &ServerName<'_>) -> CertFacts {
        let mut facts = describe(chain);
        let verdict = match (self.judge(), chain.split_first()) {
            (Err(e), _) => Err(e),
            (Ok(_), None) => Err("the server sent no certificate".to_string()),
            (Ok(judge), Some((leaf, rest))) => judge
                .verify_server_cert(leaf, rest, name, &[], UnixTime::now())
                .map(|_| ())
                .or_else(|e| {
                    if self.pinned.iter().any(|p| p.as_ref() == leaf.as_ref()) {
                        pinned_valid(leaf, name)
                    } else {
                        Err(in_words(&e))
                    }
                }),
        };
        facts.verified = verdict.is_ok();
        facts.verify_error = verdict.err();
        if self.roots == TrustRoots::System {
            if let Some(e) = &mut facts.verify_error {
                e.push_str(" (against the system store)");
            }
        }
        facts
    }
}

/// The name a TLS probe sends as SNI and checks the certificate against: the
/// target's DNS name when it has one, else the address connected to (no SNI
/// is sent for an address).
pub(crate) fn server_name_for(target: &Target, addr: SocketAddr) -> ServerName<'static> {
    target
        .tls_name()
        .and_then(|n| ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

/// A server certificate found verbatim in the `--ca` file (a pinned,
/// typically self-signed one): valid when it is within its validity period
/// and names the server the probe asked for. The handshake already proved
/// the server holds its key.
fn pinned_valid(leaf: &CertificateDer<'_>, name: &ServerName<'_>) -> Result<(), String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Err("the pinned certificate cannot be parsed".to_string());
    };
    if !cert.validity().is_valid() {
        return Err(format!(
            "the pinned certificate is outside its validity period ({} to {})",
            crate::time::rfc3339_seconds(cert.validity().not_before.timestamp()),
            crate::time::rfc3339_seconds(cert.validity().not_after.timestamp())
        ));
    }
    use x509_parser::extensions::GeneralName;
    let sans: Vec<GeneralName<'_>> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| s.value.general_names.clone())
        .unwrap_or_default();
    let matches = match name {
        ServerName::DnsName(d) => {
            let want = d.as_ref().trim_end_matches('.').to_ascii_lowercase();
            sans.iter().any(|n| match n {
                GeneralName::DNSName(s) => {
                    let s = s.trim_end_matches('.').to_ascii_lowercase();
                    s == want
                        || s.strip_prefix("*.").is_some_and(|suffix| {
                            want.split_once('.').is_some_and(|(_, rest)| rest == suffix)
                        })
                }
                _ => false,
            })
        }
        ServerName::IpAddress(ip) => {
            let want = IpAddr::from(*ip);
            sans.iter().any(|n| match n {
                GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b).is_ok_and(|a| IpAddr::from(a) == want),
                    16 => <[u8; 16]>::try_from(*b).is_ok_and(|a| IpAddr::from(a) == want),
                    _ => false,
                },
                _ => false,
            })
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(format!(
            "the pinned certificate is not valid for name {:?}",
            name.to_str()
        ))
    }
}

/// Why a handshake failed, in words rather than rustls's variant names
/// (`InvalidContentType`, `HandshakeFailure`).
pub(crate) fn handshake_failure_in_words(
    e: &(dyn std::error::Error + Send + Sync + 'static),
) -> String {
    use rustls::{AlertDescription as A, Error as E, InvalidMessage as M};
    let Some(e) = e.downcast_ref::<rustls::Error>() else {
        return e.to_string();
    };
    match e {
        E::InvalidMessage(M::InvalidContentType) => {
            "this port speaks plain TCP, not TLS (its answer is not a TLS record)".to_string()
        }
        E::InvalidMessage(_) => "the server's answer is not valid TLS".to_string(),
        E::AlertReceived(A::HandshakeFailure) => {
            "the server refused the handshake (no cipher suite or key exchange in common)"
                .to_string()
        }
        E::AlertReceived(A::ProtocolVersion) => {
            "the server refused the handshake (no TLS version in common)".to_string()
        }
        E::AlertReceived(A::CertificateRequired) | E::AlertReceived(A::BadCertificate) => {
            "the server wants a client certificate".to_string()
        }
        E::AlertReceived(A::UnrecognisedName) => {
            "the server does not serve the name asked for (SNI)".to_string()
        }
        E::AlertReceived(a) => {
            format!("the server ended the handshake with alert {}", u8::from(*a))
        }
        E::PeerIncompatible(_) => "the server's TLS is incompatible with ours".to_string(),
        E::InvalidCertificate(_) => in_words(e),
        _ => e.to_string(),
    }
}

/// A verification failure in words an operator reads, not rustls's
/// variant names (`UnknownIssuer`, `CaUsedAsEndEntity`).
fn in_words(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = e else {
        return e.to_string();
    };
    let words = match c {
        C::UnknownIssuer => "issued by a CA the trust roots do not hold",
        C::Expired | C::ExpiredContext { .. } => "the certificate has expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "the certificate is not valid yet",
        C::Revoked => "the certificate is revoked",
        C::BadSignature => "the certificate's signature does not verify",
        C::BadEncoding => "the certificate cannot be parsed",
        C::UnhandledCriticalExtension => {
            "the certificate has a critical extension no verifier knows"
        }
        // webpki's own errors arrive wrapped in `Other`, shown only by their
        // Debug form; this is the one self-signed servers produce.
        C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate as its own; pass that certificate with --ca to pin it"
        }
        // The name mismatch already reads well ("certificate not valid for
        // name ...; certificate is only valid for ...").
        _ => return e.to_string(),
    };
    format!("certificate not trusted: {words}")
}

/// The trust store of a `--ca` file, and its certificates as they are (for
/// pinning a server's own certificate).
fn load_pem_roots(
    path: &Path,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), ProbeError> {
    let bytes = std::fs::read(path).map_err(|source| ProbeError::CaFileRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut store = RootCertStore::empty();
    let mut pinned = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| ProbeError::CaFileInvalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        pinned.push(cert.clone());
        store.add(cert).map_err(|e| ProbeError::CaFileInvalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    if store.is_empty() {
        return Err(ProbeError::CaFileInvalid {
            path: path.to_path_buf(),
            reason: "no PEM certificate found".to_string(),
        });
    }
    Ok((store, pinned))
}

/// Subject, issuer, SANs and expiry of the end-entity certificate.
fn describe(chain: &[CertificateDer<'_>]) -> CertFacts {
    let mut facts = CertFacts {
        subject: String::new(),
        issuer: String::new(),
        sans: Vec::new(),
        not_after: String::new(),
        verified: false,
        verify_error: None,
    };
    let Some(leaf) = chain.first() else {
        return facts;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        facts.subject = "(unparsable certificate)".to_string();
        return facts;
    };
    facts.subject = cert.subject().to_string();
    facts.issuer = cert.issuer().to_string();
    facts.not_after = crate::time::rfc3339_seconds(cert.validity().not_after.timestamp());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        use x509_parser::extensions::GeneralName;
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => facts.sans.push(format!("DNS:{n}")),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        facts.sans.push(format!("IP:{ip}"));
                    }
                }
                GeneralName::RFC822Name(n) => facts.sans.push(format!("email:{n}")),
                GeneralName::URI(n) => facts.sans.push(format!("URI:{n}")),
                _ => {}
            }
        }
    }
    facts
}

/// Accepts any certificate during the handshake (the facts are judged
/// afterwards), while still checking that the server holds the key of the
/// certificate it showed.
#[derive(Debug)]
struct RecordingVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a pem\n").unwrap();
        let options = TlsOptions {
            roots: TrustRoots::PemFile(path.clone()),
            require_verified: false,
        };
        let err = TlsClient::new(&options).err().unwrap().to_string();
        assert!(err.contains("empty.pem"), "{err}");
        let missing = TlsOptions {
            roots: TrustRoots::PemFile(dir.path().join("missing.pem")),
            require_verified: false,
        };
        let err = TlsClient::new(&missing).err().unwrap().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
