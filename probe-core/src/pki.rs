//! The small certificate authority behind the agents' control channel: it
//! creates a CA and the agents' and coordinator's certificates (in the
//! manner of `consul tls`), so that mutual TLS needs no external tooling,
//! and it turns those files into the rustls configurations both ends use.
//!
//! Agents' certificates carry the `serverAuth` usage and the coordinator's
//! `clientAuth` only, so an agent's key can never drive other agents.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

mod guidance;
pub use guidance::{certificate_usages, refused_by_agent, refused_client_certificate};

/// The name of the coordinator's certificate in a PKI directory.
pub const COORDINATOR: &str = "coordinator";

/// The ALPN protocol name of the control channel, so a control endpoint is
/// never mistaken for (or by) another TLS service.
pub const CONTROL_ALPN: &[u8] = b"portcall-control/1";

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file would be overwritten and `force` was not given.
    #[error("{} already exists (use --force to replace it)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file or directory could not be written.
    #[error("write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The CA files are missing from the directory.
    #[error("no CA in {} (run `portcall pki init --dir {}` first)", dir.display(), dir.display())]
    NoCa {
        /// The PKI directory.
        dir: PathBuf,
    },
    /// An agent's PKI directory lacks a file it needs: those come from the
    /// coordinator's PKI directory, never from a `pki init` of its own.
    #[error(
        "{} not found: an agent's pki directory needs ca.pem, {name}.pem and {name}-key.pem, copied from the coordinator's pki directory (where `portcall pki init` and `portcall pki issue` made them); do not run `pki init` on the agent: a new CA there would match nothing",
        missing.display()
    )]
    NoAgentIdentity {
        /// The agent's name.
        name: String,
        /// The first missing file.
        missing: PathBuf,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate name that cannot be a file name.
    #[error(
        "certificate name {name:?}: expected letters, digits, '.', '-' or '_', not starting with '.' or '-'"
    )]
    BadName {
        /// The name as given.
        name: String,
    },
    /// A plan host takes the coordinator's certificate name.
    #[error("plan host `{name}` has the coordinator's reserved certificate name; rename the host")]
    ReservedName {
        /// The host's name.
        name: String,
    },
    /// rcgen could not create a key or certificate.
    #[error("generate certificate for {name}")]
    Generate {
        /// The certificate's name.
        name: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// rustls rejected the material when building a TLS configuration.
    #[error("set up TLS for {name}")]
    Tls {
        /// The certificate's name.
        name: String,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUsage {
    /// An agent: serves the control endpoint and TLS canaries.
    Server,
    /// The coordinator: a client of the agents' control endpoints.
    Client,
}

impl CertUsage {
    /// The usage a certificate of this name gets by default:
    /// [`CertUsage::Client`] for `coordinator`, [`CertUsage::Server`] else.
    pub fn for_name(name: &str) -> CertUsage {
        if name == COORDINATOR {
            CertUsage::Client
        } else {
            CertUsage::Server
        }
    }
}

/// A certificate to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The name: the file stem, the common name and (when it is a valid DNS
    /// name) a DNS subject alternative name.
    pub name: String,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// Further DNS subject alternative names.
    pub dns: Vec<String>,
    /// Server (agent) or client (coordinator).
    pub usage: CertUsage,
}

impl IssueRequest {
    /// A request for `name` with the usage its name implies and no extra
    /// subject alternative names.
    pub fn new(name: impl Into<String>) -> IssueRequest {
        let name = name.into();
        IssueRequest {
            usage: CertUsage::for_name(&name),
            name,
            ips: Vec::new(),
            dns: Vec::new(),
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// A certificate authority held in memory: used by `pki init`/`issue` and
/// by `portcall demo`, which makes a throwaway one so that even the demo's
/// control channel is mutual TLS.
pub struct Authority {
    pem: PemPair,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA with a fresh ECDSA P-256 key, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Authority, PkiError> {
        let fail = |source| PkiError::Generate {
            name: "ca".to_string(),
            source,
        };
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "portcall");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, 3650);
        let cert = params.self_signed(&key).map_err(fail)?;
        let pem = PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Authority {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its PEM certificate and key (as `pki init` wrote them).
    pub fn from_pem(cert_pem: &str, key_pem: &str, source: &Path) -> Result<Authority, PkiError> {
        let invalid = |reason: String| PkiError::Invalid {
            path: source.to_path_buf(),
            reason,
        };
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid(format!("CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| invalid(format!("CA certificate: {e}")))?;
        Ok(Authority {
            pem: PemPair {
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
            },
            issuer,
        })
    }

    /// The CA's own certificate and key.
    pub fn pem(&self) -> &PemPair {
        &self.pem
    }

    /// Issues a certificate signed by this CA, valid for two years.
    pub fn issue(&self, req: &IssueRequest) -> Result<PemPair, PkiError> {
        check_name(&req.name)?;
        let fail = |source| PkiError::Generate {
            name: req.name.clone(),
            source,
        };
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.name.as_str());
        dn.push(DnType::OrganizationName, "portcall");
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for dns in std::iter::once(&req.name).chain(&req.dns) {
            if let Ok(n) = dns.clone().try_into() {
                let san = SanType::DnsName(n);
                if !sans.contains(&san) {
                    sans.push(san);
                }
            } else if dns != &req.name {
                return Err(PkiError::BadName { name: dns.clone() });
            }
        }
        for ip in &req.ips {
            sans.push(SanType::IpAddress(*ip));
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match req.usage {
            CertUsage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            CertUsage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, 825);
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Sets the validity from yesterday (so a slightly slow clock elsewhere
/// still accepts the certificate) to `days` from now.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        / 86_400;
    let ymd = |day: i64| {
        let (y, m, d) = crate::time::civil_from_days(day);
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = ymd(now - 1);
    params.not_after = ymd(now + days);
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadName {
            name: name.to_string(),
        })
    }
}

/// The files `pki init` and `pki issue` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key file (mode 0600).
    pub key: PathBuf,
}

/// The certificate file of `name` in `dir`.
pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}

/// The private key file of `name` in `dir`.
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-key.pem"))
}

/// `portcall pki init`: a new CA in `dir` (`ca.pem`, `ca-key.pem`).
pub fn init(dir: &Path, force: bool) -> Result<Written, PkiError> {
    let ca = Authority::generate("portcall CA")?;
    create_dir(dir)?;
    write_pair(dir, "ca", ca.pem(), force)
}

/// `portcall pki issue`: `DIR/NAME.pem` and `DIR/NAME-key.pem` signed by the
/// CA in `dir`.
pub fn issue(dir: &Path, req: &IssueRequest, force: bool) -> Result<Written, PkiError> {
    check_name(&req.name)?;
    if req.name == "ca" {
        return Err(PkiError::BadName {
            name: req.name.clone(),
        });
    }
    let ca = load_authority(dir)?;
    // Refuse before generating anything, so a refused run changes nothing.
    if !force {
        for p in [cert_path(dir, &req.name), key_path(dir, &req.name)] {
            if p.exists() {
                return Err(PkiError::Exists { path: p });
            }
        }
    }
    let pair = ca.issue(req)?;
    write_pair(dir, &req.name, &pair, force)
}

/// The certificate requests of a whole plan: one per host, valid for every
/// address of the host (IP SANs, and DNS SANs for names), plus the
/// coordinator's.
pub fn plan_requests(plan: &crate::plan::Plan) -> Vec<IssueRequest> {
    let mut requests: Vec<IssueRequest> = plan
        .hosts
        .iter()
        .map(|h| {
            let mut req = IssueRequest::new(h.name.as_str());
            for address in host_addresses(h) {
                match address {
                    crate::plan::Address::Ip(ip) => req.ips.push(*ip),
                    crate::plan::Address::Dns(name) => req.dns.push(name.clone()),
                }
            }
            req
        })
        .collect();
    requests.push(IssueRequest::new(COORDINATOR));
    requests
}

/// Every address of a host (a dual-stack host has several, primary
/// first).
fn host_addresses(host: &crate::plan::Host) -> impl Iterator<Item = &crate::plan::Address> {
    host.addresses.iter()
}

/// `portcall pki issue --plan`: every host's certificate and the
/// coordinator's, signed by the CA in `dir`. Without `force`, nothing is
/// written when any of the files exists already.
pub fn issue_plan(
    dir: &Path,
    plan: &crate::plan::Plan,
    force: bool,
) -> Result<Vec<Written>, PkiError> {
    let requests = plan_requests(plan);
    // The last request is the coordinator's own; a plan host of that name
    // would get (or overwrite with --force) the coordinator's client key.
    if let Some(h) = plan.hosts.iter().find(|h| h.name == COORDINATOR) {
        return Err(PkiError::ReservedName {
            name: h.name.clone(),
        });
    }
    for req in &requests {
        check_name(&req.name)?;
        if req.name == "ca" {
            return Err(PkiError::BadName {
                name: req.name.clone(),
            });
        }
    }
    let ca = load_authority(dir)?;
    if !force {
        for req in &requests {
            for p in [cert_path(dir, &req.name), key_path(dir, &req.name)] {
                if p.exists() {
                    return Err(PkiError::Exists { path: p });
                }
            }
        }
    }
    requests
        .iter()
        .map(|req| {
            let pair = ca.issue(req)?;
            write_pair(dir, &req.name, &pair, force)
        })
        .collect()
}

/// Reads the CA of `dir`.
pub fn load_authority(dir: &Path) -> Result<Authority, PkiError> {
    let (cert, key) = (cert_path(dir, "ca"), key_path(dir, "ca"));
    if !cert.exists() || !key.exists() {
        return Err(PkiError::NoCa {
            dir: dir.to_path_buf(),
        });
    }
    let cert_pem = read_string(&cert)?;
    let key_pem = read_string(&key)?;
    Authority::from_pem(&cert_pem, &key_pem, &cert)
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

fn write_pair(dir: &Path, name: &str, pair: &PemPair, force: bool) -> Result<Written, PkiError> {
    let written = Written {
        cert: cert_path(dir, name),
        key: key_path(dir, name),
    };
    if !force {
        for p in [&written.cert, &written.key] {
            if p.exists() {
                return Err(PkiError::Exists { path: p.clone() });
            }
        }
    }
    // The key first: a certificate without its key is useless, the other
    // way round merely incomplete.
    write_file(&written.key, pair.key_pem.as_bytes(), 0o600, force)?;
    write_file(&written.cert, pair.cert_pem.as_bytes(), 0o644, force)?;
    Ok(written)
}

/// Writes through a temporary file created with its final mode (so a key is
/// never readable by others, not even for a moment) and renames it into
/// place; without `force` an existing file is never replaced.
fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map_or_else(|| "pki".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    let result = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    let placed = result.and_then(|()| {
        if force {
            fs::rename(&tmp, path)
        } else {
            // hard_link fails if the destination exists: no overwrite even
            // when another process created it since we checked.
            fs::hard_link(&tmp, path)
        }
    });
    let _ = fs::remove_file(&tmp);
    placed.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            err(e)
        }
    })
}

fn read_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One party's TLS material: the CA it trusts and its own certificate.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    /// The party's name (`coordinator` or a host name).
    pub name: String,
    /// The trusted CA.
    pub roots: Arc<RootCertStore>,
    /// The party's certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The party's private key.
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl TlsIdentity {
    /// Reads `DIR/ca.pem`, `DIR/NAME.pem` and `DIR/NAME-key.pem`.
    pub fn load(dir: &Path, name: &str) -> Result<TlsIdentity, PkiError> {
        let ca = cert_path(dir, "ca");
        if name != COORDINATOR {
            let files = [ca.clone(), cert_path(dir, name), key_path(dir, name)];
            if let Some(missing) = files.into_iter().find(|f| !f.exists()) {
                return Err(PkiError::NoAgentIdentity {
                    name: name.to_string(),
                    missing,
                });
            }
        }
        if !ca.exists() {
            return Err(PkiError::NoCa {
                dir: dir.to_path_buf(),
            });
        }
        let ca_pem = read_string(&ca)?;
        let cert_file = cert_path(dir, name);
        let key_file = key_path(dir, name);
        let cert_pem = read_string(&cert_file)?;
        let key_pem = read_string(&key_file)?;
        TlsIdentity::from_pem(name, &ca_pem, &cert_pem, &key_pem).map_err(|e| match e {
            PkiError::Invalid { path, reason } => PkiError::Invalid {
                path: match path.to_str() {
                    Some("ca") => ca.clone(),
                    Some("key") => key_file.clone(),
                    _ => cert_file.clone(),
                },
                reason,
            },
            other => other,
        })
    }

    /// Builds an identity from PEM text (the CA certificate, the party's
    /// certificate, its key). Errors name `ca`, `cert` or `key` as the path.
    pub fn from_pem(
        name: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<TlsIdentity, PkiError> {
        let invalid = |which: &str, reason: String| PkiError::Invalid {
            path: PathBuf::from(which),
            reason,
        };
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let c = c.map_err(|e| invalid("ca", e.to_string()))?;
            roots.add(c).map_err(|e| invalid("ca", e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(invalid("ca", "no PEM certificate found".to_string()));
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("cert", e.to_string()))?;
        if chain.is_empty() {
            return Err(invalid("cert", "no PEM certificate found".to_string()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| invalid("key", format!("no usable private key: {e}")))?;
        Ok(TlsIdentity {
            name: name.to_string(),
            roots: Arc::new(roots),
            chain,
            key: Arc::new(key),
        })
    }

    /// The agent's control endpoint: TLS 1.3 only, a client certificate
    /// chaining to the CA (with the `clientAuth` usage) required.
    pub fn control_server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let tls = |source| PkiError::Tls {
            name: self.name.clone(),
            source,
        };
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| tls(rustls::Error::General(e.to_string())))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls)?;
        config.alpn_protocols = vec![CONTROL_ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// A TLS canary's server side: the agent's certificate, any client.
    pub fn canary_server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        canary_config(&self.name, self.chain.clone(), self.key.clone_key())
    }

    /// The coordinator's side of the control channel to one agent: TLS 1.3,
    /// this identity as client certificate, and the agent's certificate
    /// checked against the CA and against the agent's plan address or its
    /// host name.
    pub fn control_client_config(
        &self,
        agent_host: &str,
        agent_address: Option<IpAddr>,
    ) -> Result<Arc<ClientConfig>, PkiError> {
        let tls = |source| PkiError::Tls {
            name: self.name.clone(),
            source,
        };
        let provider = provider();
        let webpki =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| tls(rustls::Error::General(e.to_string())))?;
        let verifier = Arc::new(AgentVerifier {
            inner: webpki,
            host: ServerName::try_from(agent_host.to_string()).ok(),
            address: agent_address.map(|a| ServerName::IpAddress(a.into())),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls)?;
        config.alpn_protocols = vec![CONTROL_ALPN.to_vec()];
        // One config per connection, so a session cache would never be
        // read again; rustls sizes one for 256 servers up front (7.6 KiB
        // each, 1.35 MiB of a 100-host round's coordinator).
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// A self-signed canary certificate for an agent running without a PKI
/// (`--insecure` on loopback): TLS canaries still need something to show.
pub fn self_signed_canary_config(host: &str) -> Result<Arc<ServerConfig>, PkiError> {
    let fail = |source| PkiError::Generate {
        name: host.to_string(),
        source,
    };
    let key = KeyPair::generate().map_err(fail)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    params.distinguished_name = dn;
    if let Ok(n) = host.to_string().try_into() {
        params.subject_alt_names = vec![SanType::DnsName(n)];
    }
    let cert = params.self_signed(&key).map_err(fail)?;
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| PkiError::Invalid {
        path: PathBuf::from(host),
        reason: e.to_string(),
    })?;
    canary_config(host, vec![cert.der().clone()], key)
}

fn canary_config(
    name: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, PkiError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|source| PkiError::Tls {
            name: name.to_string(),
            source,
        })?;
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Fills `buf` from the operating system's secure random source (through
/// rustls's provider), for nonces and round ids.
pub fn random_bytes(buf: &mut [u8]) {
    // The ring provider's random source only fails if the OS has none, in
    // which case nothing TLS-related could work either.
    let _ = rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf);
}

/// The names a client certificate carries: its DNS subject alternative
/// names, or its common name when it has none (as RFC 6125 reads a
/// certificate). Empty when the certificate cannot be parsed.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect();
    }
    names
}

/// A client certificate that does not name the coordinator: the error
/// message the client gets, naming the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not authorized: this agent acts only for the certificate named {coordinator:?} (the coordinator's); the client certificate names {}",
    shown_names(.names)
)]
pub struct NotCoordinator {
    /// The name the agent acts for.
    pub coordinator: String,
    /// The names the client certificate carries.
    pub names: Vec<String>,
}

/// Up to four names, quoted, or "no name".
fn shown_names(names: &[String]) -> String {
    if names.is_empty() {
        "no name".to_string()
    } else {
        names
            .iter()
            .take(4)
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The authorization rule of the control channel: an agent acts only for a
/// client certificate that names the coordinator (`coordinator` unless the
/// agent was told another name). A certificate from the same CA with any
/// other name, even with the `clientAuth` usage, drives nothing.
pub fn authorize_coordinator(names: &[String], coordinator: &str) -> Result<(), NotCoordinator> {
    if names.iter().any(|n| n == coordinator) {
        return Ok(());
    }
    Err(NotCoordinator {
        coordinator: coordinator.to_owned(),
        names: names.to_vec(),
    })
}

/// Accepts an agent's certificate when it chains to the CA and names either
/// the agent's plan address or its host name.
#[derive(Debug)]
struct AgentVerifier {
    inner: Arc<WebPkiServerVerifier>,
    host: Option<ServerName<'static>>,
    address: Option<ServerName<'static>>,
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = None;
        for name in [self.address.as_ref(), self.host.as_ref()]
            .into_iter()
            .flatten()
            .chain(
                std::iter::once(server_name)
                    .filter(|_| self.address.is_none() && self.host.is_none()),
            )
        {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::General(
            "no name to check the agent's certificate against".to_string(),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_issue_write_files_with_private_keys_0600_and_never_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let w = init(&dir, false).unwrap();
        assert_eq!(w.cert, dir.join("ca.pem"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&w.key), 0o600);
        let before = fs::read(&w.key).unwrap();
        let err = init(&dir, false).unwrap_err();
        assert!(matches!(err, PkiError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&w.key).unwrap(), before, "key was replaced");

        let mut req = IssueRequest::new("gw-worker-1");
        req.ips = vec!["127.0.0.1".parse().unwrap()];
        let a = issue(&dir, &req, false).unwrap();
        assert_eq!(mode(&a.key), 0o600);
        assert!(
            fs::read_to_string(&a.cert)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        let err = issue(&dir, &req, false).unwrap_err().to_string();
        assert!(err.contains("gw-worker-1.pem already exists"), "{err}");
        let old = fs::read(&a.cert).unwrap();
        issue(&dir, &req, true).unwrap();
        assert_ne!(fs::read(&a.cert).unwrap(), old, "--force must replace");
        assert_eq!(mode(&a.key), 0o600);
        init(&dir, true).unwrap();
        assert_ne!(fs::read(&w.key).unwrap(), before);
    }

    #[test]
    fn an_agent_with_an_empty_pki_directory_is_told_to_copy_from_the_coordinator() {
        let tmp = tempfile::tempdir().unwrap();
        let err = TlsIdentity::load(tmp.path(), "app")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{} not found",
                tmp.path().join("ca.pem").display()
            )),
            "{err}"
        );
        assert!(
            err.contains(
                "ca.pem, app.pem and app-key.pem, copied from the coordinator's pki directory"
            ),
            "{err}"
        );
        assert!(err.contains("do not run `pki init` on the agent"), "{err}");
        // With the CA copied but not its own pair, the message names that.
        init(tmp.path(), false).unwrap();
        let err = TlsIdentity::load(tmp.path(), "app")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{} not found",
                tmp.path().join("app.pem").display()
            )),
            "{err}"
        );
        // The coordinator's own directory is where `pki init` belongs.
        let empty = tempfile::tempdir().unwrap();
        let err = TlsIdentity::load(empty.path(), COORDINATOR)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pki init"), "{err}");
    }

    #[test]
    fn issue_without_ca_and_bad_names_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let err = issue(tmp.path(), &IssueRequest::new("a"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pki init"), "{err}");
        init(tmp.path(), false).unwrap();
        for bad in ["../x", "", "-x", "a b", "ca"] {
            let err = issue(tmp.path(), &IssueRequest::new(bad), false).unwrap_err();
            assert!(matches!(err, PkiError::BadName { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn issued_certificates_carry_names_and_usages() {
        let ca = Authority::generate("test CA").unwrap();
        let mut req = IssueRequest::new("db");
        req.ips = vec!["127.0.4.10".parse().unwrap()];
        req.dns = vec!["db.example".to_string()];
        let pair = ca.issue(&req).unwrap();
        let der = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains("db.example")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("DNSName(db)")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("7f:00:04:0a")), "{names:?}");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let coord = ca.issue(&IssueRequest::new(COORDINATOR)).unwrap();
        let der = CertificateDer::from_pem_slice(coord.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn issue_plan_issues_every_host_on_its_addresses_and_the_coordinator() {
        let plan = crate::plan::Plan::parse(
            r#"
name = "pki"
[[hosts]]
name = "web"
address = ["198.18.7.1", "2001:2::7:1"]
[[hosts]]
name = "db"
address = "db.lab.example"
roles = ["mysql"]
[[flows]]
from = "host:web"
to = "host:db"
ports = ["mysql"]
"#,
            "pki.toml",
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), false).unwrap();
        let written = issue_plan(tmp.path(), &plan, false).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|w| w.cert.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["web.pem", "db.pem", "coordinator.pem"]);
        let sans = |name: &str| {
            let pem = fs::read(tmp.path().join(format!("{name}.pem"))).unwrap();
            let der = CertificateDer::from_pem_slice(&pem).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
            let san = cert.subject_alternative_name().unwrap().unwrap();
            san.value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(sans("web").contains("c6:12:07:01"), "{}", sans("web"));
        // A dual-stack host's certificate names every address.
        assert!(
            sans("web").contains("20:01:00:02:00:00:00:00:00:00:00:00:00:07:00:01"),
            "{}",
            sans("web")
        );
        assert!(sans("db").contains("db.lab.example"), "{}", sans("db"));
        // The agents and the coordinator can load what was issued.
        for name in ["web", "db", COORDINATOR] {
            TlsIdentity::load(tmp.path(), name).unwrap();
        }
        // Nothing is replaced without force, and nothing half-issued.
        let before = fs::read(tmp.path().join("db.pem")).unwrap();
        fs::remove_file(tmp.path().join("web.pem")).unwrap();
        fs::remove_file(tmp.path().join("web-key.pem")).unwrap();
        let err = issue_plan(tmp.path(), &plan, false).unwrap_err();
        assert!(matches!(err, PkiError::Exists { .. }), "{err}");
        assert!(!tmp.path().join("web.pem").exists(), "nothing written");
        issue_plan(tmp.path(), &plan, true).unwrap();
        assert_ne!(fs::read(tmp.path().join("db.pem")).unwrap(), before);
        // A plan host named like the coordinator (lint refuses it; a plan
        // built otherwise too) never gets, nor replaces, its client key.
        let coordinator_key = fs::read(tmp.path().join("coordinator-key.pem")).unwrap();
        let mut renamed = plan.clone();
        renamed.hosts[0].name = COORDINATOR.into();
        let err = issue_plan(tmp.path(), &renamed, true).unwrap_err();
        assert!(matches!(err, PkiError::ReservedName { .. }), "{err}");
        assert_eq!(
            fs::read(tmp.path().join("coordinator-key.pem")).unwrap(),
            coordinator_key
        );
    }
}
