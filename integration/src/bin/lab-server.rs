//! `lab-server`: the listeners a lab host (or the loopback benchmark) needs,
//! plain TCP and TLS with a freshly made CA, in one small process that exits
//! by itself after `--lifetime` seconds so that nothing outlives a test.
//!
//! Usage: `lab-server --bind ADDR [--tcp PORTS] [--tls PORTS --ca-out FILE
//! --name NAME [--extra-sans N]] [--udp-canary PORTS] [--udp-silent PORTS]
//! [--udp-echo PORTS] [--lifetime SECS]`; PORTS as in targets (`80,443,7000-7099`).
//! `--extra-sans N` pads the certificate with N more DNS names, for a
//! handshake too large for a small path MTU. `--udp-canary` answers each
//! datagram as a portcall canary of `--name` from another round would
//! (`PORTCALL-ERR NAME not-this-round`); `--udp-silent` reads datagrams and
//! never answers (a service that ignores the request); `--udp-echo` sends
//! every datagram back as it came (the echo service, RFC 862).
//! Prints `ready` once every listener is bound.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

struct Options {
    bind: IpAddr,
    tcp: Vec<u16>,
    tls: Vec<u16>,
    ca_out: Option<PathBuf>,
    name: String,
    extra_sans: usize,
    udp_canary: Vec<u16>,
    udp_silent: Vec<u16>,
    udp_echo: Vec<u16>,
    lifetime: Duration,
}

fn ports(spec: &str) -> anyhow::Result<Vec<u16>> {
    let targets = probe_core::probe::parse_target(&format!("lab:{spec}"))?;
    Ok(targets.iter().map(|t| t.port.get()).collect())
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        bind: IpAddr::from([127, 0, 0, 1]),
        tcp: Vec::new(),
        tls: Vec::new(),
        ca_out: None,
        name: "lab-server".to_string(),
        extra_sans: 0,
        udp_canary: Vec::new(),
        udp_silent: Vec::new(),
        udp_echo: Vec::new(),
        lifetime: Duration::from_secs(300),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => o.bind = value.parse().context("--bind")?,
            "--tcp" => o.tcp = ports(&value)?,
            "--tls" => o.tls = ports(&value)?,
            "--ca-out" => o.ca_out = Some(PathBuf::from(value)),
            "--name" => o.name = value,
            "--extra-sans" => o.extra_sans = value.parse().context("--extra-sans")?,
            "--udp-canary" => o.udp_canary = ports(&value)?,
            "--udp-silent" => o.udp_silent = ports(&value)?,
            "--udp-echo" => o.udp_echo = ports(&value)?,
            "--lifetime" => o.lifetime = Duration::from_secs(value.parse().context("--lifetime")?),
            _ => bail!("unknown flag {flag}"),
        }
    }
    if !o.tls.is_empty() && o.ca_out.is_none() {
        bail!("--tls needs --ca-out FILE");
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let mut listeners = Vec::new();
    for &port in &o.tcp {
        let l = TcpListener::bind((o.bind, port)).with_context(|| format!("bind {port}"))?;
        listeners.push((l, None));
    }
    if !o.tls.is_empty() {
        let config = Arc::new(tls_config(&o)?);
        for &port in &o.tls {
            let l = TcpListener::bind((o.bind, port)).with_context(|| format!("bind {port}"))?;
            listeners.push((l, Some(config.clone())));
        }
    }
    for (listener, tls) in listeners {
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(config) = &tls {
                    let config = config.clone();
                    std::thread::spawn(move || serve_tls(stream, config));
                }
                // Plain connections are closed at once: the handshake is
                // all a probe needs.
            }
        });
    }
    for &port in &o.udp_canary {
        let s = UdpSocket::bind((o.bind, port)).with_context(|| format!("bind udp {port}"))?;
        let name = o.name.clone();
        std::thread::spawn(move || canary_udp(&s, &name));
    }
    for &port in &o.udp_silent {
        let s = UdpSocket::bind((o.bind, port)).with_context(|| format!("bind udp {port}"))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while s.recv_from(&mut buf).is_ok() {}
        });
    }
    for &port in &o.udp_echo {
        let s = UdpSocket::bind((o.bind, port)).with_context(|| format!("bind udp {port}"))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        });
    }
    println!("ready");
    std::io::stdout().flush()?;
    std::thread::sleep(o.lifetime);
    Ok(())
}

/// Answers every datagram as a portcall canary of `name` in another round.
fn canary_udp(s: &UdpSocket, name: &str) {
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = s.recv_from(&mut buf) {
        let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
        let why = match probe_core::probe::canary_line::parse_probe_line(line) {
            Some(_) => "not-this-round",
            None => "bad-line",
        };
        let _ = s.send_to(format!("PORTCALL-ERR {name} {why}\n").as_bytes(), from);
    }
}

fn serve_tls(mut stream: TcpStream, config: Arc<rustls::ServerConfig>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::Stream::new(&mut conn, &mut stream);
    let mut buf = [0u8; 256];
    let _ = tls.read(&mut buf);
}

/// A CA (written to `--ca-out`) and a server certificate for `--name` and
/// the bound address, signed by it.
fn tls_config(o: &Options) -> anyhow::Result<rustls::ServerConfig> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portcall lab ca");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    if let Some(path) = &o.ca_out {
        std::fs::write(path, ca_cert.pem()).with_context(|| format!("write {}", path.display()))?;
    }
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut names = vec![o.name.clone(), o.bind.to_string()];
    names.extend((0..o.extra_sans).map(|i| format!("padding-{i:04}.{}.lab.invalid", o.name)));
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, &o.name);
    let cert = params.signed_by(&key, &issuer)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )?;
    Ok(config)
}
