//! What to tell people when a control-channel handshake fails because a
//! certificate is the wrong kind: rustls says only "UnsupportedCertificate"
//! on one side and "invalid peer certificate" on the other, while the fix is
//! always "present the certificate made for this role". Both sides name the
//! usage they need and the certificate's name.

use std::io;

use rustls::pki_types::CertificateDer;
use rustls::{AlertDescription, CertificateError, Error};

use super::{COORDINATOR, TlsIdentity, certificate_names};

/// The rustls error inside a TLS stream's I/O error.
fn rustls_error(e: &io::Error) -> Option<&Error> {
    e.get_ref()?.downcast_ref::<Error>()
}

/// The extended key usages a certificate allows (`serverAuth`,
/// `clientAuth`), or `any` when it does not restrict them.
pub fn certificate_usages(cert: &CertificateDer<'_>) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return "unreadable".to_string();
    };
    match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            let mut usages = Vec::new();
            if eku.value.server_auth {
                usages.push("serverAuth");
            }
            if eku.value.client_auth {
                usages.push("clientAuth");
            }
            if usages.is_empty() {
                "neither serverAuth nor clientAuth".to_string()
            } else {
                usages.join(" and ")
            }
        }
        _ => "any".to_string(),
    }
}

/// On the coordinator: the agent refused the certificate we presented as
/// not for client authentication (the alert rustls reports as
/// `UnsupportedCertificate`). Names our certificate, its usage and what the
/// control channel needs; `None` for any other handshake error.
pub fn refused_by_agent(err: &io::Error, ours: &TlsIdentity) -> Option<String> {
    if !matches!(
        rustls_error(err)?,
        Error::AlertReceived(AlertDescription::UnsupportedCertificate)
    ) {
        return None;
    }
    let cert = ours.chain.first()?;
    Some(format!(
        "the agent refused our certificate {}.pem (named {}, usage {}): the coordinator must present a certificate with usage clientAuth, named `{COORDINATOR}` — {COORDINATOR}.pem and {COORDINATOR}-key.pem as `portcall pki issue` writes them; an agent's certificate (serverAuth only) cannot stand in for it",
        ours.name,
        certificate_names(cert).join(", "),
        certificate_usages(cert),
    ))
}

/// On an agent: a client presented a certificate of its CA that is not for
/// client authentication (most often an agent's own, copied to the
/// coordinator). Names the usage and the name the agent accepts; `None`
/// for any other handshake error.
pub fn refused_client_certificate(err: &io::Error, coordinator: &str) -> Option<String> {
    match rustls_error(err)? {
        Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => Some(format!(
            "a client presented a certificate of our CA without usage clientAuth (an agent's certificate, serverAuth only?): the coordinator must present its own, usage clientAuth and named `{coordinator}` ({coordinator}.pem from `portcall pki issue`)"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use rustls::pki_types::ServerName;
    use tokio::io::AsyncReadExt;

    use super::super::{Authority, IssueRequest};
    use super::*;

    fn identity(ca: &Authority, name: &str, ip: Option<IpAddr>) -> TlsIdentity {
        let mut req = IssueRequest::new(name);
        req.ips.extend(ip);
        let pair = ca.issue(&req).unwrap();
        TlsIdentity::from_pem(name, &ca.pem().cert_pem, &pair.cert_pem, &pair.key_pem).unwrap()
    }

    /// The handshake of a coordinator presenting `client` to agent `db`, in
    /// memory: both sides' errors.
    async fn handshake(ca: &Authority, client: &TlsIdentity) -> (io::Error, io::Error) {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let agent = identity(ca, "db", Some(ip));
        let server = tokio_rustls::TlsAcceptor::from(agent.control_server_config().unwrap());
        let connector =
            tokio_rustls::TlsConnector::from(client.control_client_config("db", Some(ip)).unwrap());
        let (a, b) = tokio::io::duplex(64 * 1024);
        // TLS 1.3: the client's handshake is over before the agent checks
        // its certificate; the agent's alert arrives at the first read.
        let client = async {
            let mut tls = connector
                .connect(ServerName::IpAddress(ip.into()), a)
                .await?;
            tls.read_u8().await
        };
        let (c, s) = tokio::join!(client, server.accept(b));
        (
            c.expect_err("client side fails"),
            s.map(|_| ()).expect_err("agent side fails"),
        )
    }

    #[tokio::test]
    async fn an_agent_certificate_as_the_coordinator_is_named_on_both_sides() {
        let ca = Authority::generate("test CA").unwrap();
        let app = identity(&ca, "app", Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        let (coordinator, agent) = handshake(&ca, &app).await;
        let said = refused_by_agent(&coordinator, &app)
            .unwrap_or_else(|| panic!("no guidance for the coordinator's error: {coordinator}"));
        assert!(
            said.contains("our certificate app.pem (named app, usage serverAuth)"),
            "{said}"
        );
        assert!(
            said.contains("usage clientAuth, named `coordinator`"),
            "{said}"
        );
        let said = refused_client_certificate(&agent, COORDINATOR)
            .unwrap_or_else(|| panic!("no guidance for the agent's error: {agent}"));
        assert!(
            said.contains("without usage clientAuth") && said.contains("named `coordinator`"),
            "{said}"
        );
        // The right certificate gets through, and other errors get no
        // misleading guidance.
        let right = identity(&ca, COORDINATOR, None);
        let other_ca = Authority::generate("another CA").unwrap();
        let stranger = identity(&other_ca, COORDINATOR, None);
        let (coordinator, agent) = handshake(&ca, &stranger).await;
        assert!(
            refused_by_agent(&coordinator, &stranger).is_none(),
            "{coordinator}"
        );
        assert!(
            refused_client_certificate(&agent, COORDINATOR).is_none(),
            "{agent}"
        );
        assert_eq!(certificate_usages(&right.chain[0]), "clientAuth");
    }
}
