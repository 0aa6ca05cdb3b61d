//! `exchange-floor`: the least a host of the scale benchmark can do for its
//! share of a mesh round, as a reference for what the machine allows. It
//! holds plain listeners that answer a line with a line, and at an agreed
//! moment connects to every target port, sends a line, reads the answer and
//! resets: the packets of portcall's nonce exchange (SYN; SYN-ACK; the line
//! carrying the handshake's last ACK; the answer carrying its FIN; the
//! reset), with no evidence, no control channel, no report.
//!
//! Usage: `exchange-floor --bind ADDR --ports FIRST-LAST --start-ms EPOCH_MS
//! [--concurrency N] [--timeout-ms T] [--retries R] TARGET...`: a port
//! that does not answer is tried R more times (default 1). Targets must be lab
//! addresses (198.18.0.0/15) or loopback. Prints `ready` once listening,
//! then `sweep_ms=W ok=K of=M` after its sweep, and keeps answering until it
//! is killed or `--lifetime` seconds (default 300) pass.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

struct Options {
    bind: IpAddr,
    ports: (u16, u16),
    start_ms: u64,
    concurrency: usize,
    timeout: Duration,
    retries: u32,
    lifetime: Duration,
    targets: Vec<IpAddr>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        bind: IpAddr::from([127, 0, 0, 1]),
        ports: (0, 0),
        start_ms: 0,
        concurrency: 256,
        timeout: Duration::from_millis(1000),
        retries: 1,
        lifetime: Duration::from_secs(300),
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bind" => o.bind = value()?.parse().context("--bind")?,
            "--ports" => {
                let v = value()?;
                let (a, b) = v.split_once('-').context("--ports FIRST-LAST")?;
                o.ports = (a.parse().context("--ports")?, b.parse().context("--ports")?);
            }
            "--start-ms" => o.start_ms = value()?.parse().context("--start-ms")?,
            "--concurrency" => o.concurrency = value()?.parse().context("--concurrency")?,
            "--timeout-ms" => {
                o.timeout = Duration::from_millis(value()?.parse().context("--timeout-ms")?);
            }
            "--retries" => o.retries = value()?.parse().context("--retries")?,
            "--lifetime" => {
                o.lifetime = Duration::from_secs(value()?.parse().context("--lifetime")?)
            }
            t => {
                let ip: IpAddr = t.parse().with_context(|| format!("not an address: {t}"))?;
                let lab = match ip {
                    IpAddr::V4(v4) => integration::in_lab_net(v4) || v4.is_loopback(),
                    IpAddr::V6(v6) => v6.is_loopback(),
                };
                if !lab {
                    bail!("{ip} is neither a lab address (198.18.0.0/15) nor loopback");
                }
                o.targets.push(ip);
            }
        }
    }
    if o.ports.0 == 0 || o.ports.1 < o.ports.0 {
        bail!("--ports FIRST-LAST is needed");
    }
    if o.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("exchange-floor: {e:#}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(run(options)) {
        eprintln!("exchange-floor: {e:#}");
        std::process::exit(1);
    }
}

async fn run(o: Options) -> anyhow::Result<()> {
    for port in o.ports.0..=o.ports.1 {
        let socket = match o.bind {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }?;
        socket.set_reuseaddr(true)?;
        socket
            .bind(SocketAddr::new(o.bind, port))
            .with_context(|| format!("bind {port}"))?;
        let listener = socket.listen(4096)?;
        // As the canary: the answer acknowledges the line.
        let _ = socket2::SockRef::from(&listener).set_tcp_quickack(false);
        tokio::spawn(serve(listener));
    }
    println!("ready");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    tokio::time::sleep(Duration::from_millis(o.start_ms.saturating_sub(now))).await;
    let started = Instant::now();
    let ok = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(o.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let total = o.targets.len() * usize::from(o.ports.1 - o.ports.0 + 1);
    for &ip in &o.targets {
        for port in o.ports.0..=o.ports.1 {
            let slot = slots.clone().acquire_owned().await?;
            let (ok, timeout, retries) = (ok.clone(), o.timeout, o.retries);
            tasks.spawn(async move {
                let _slot = slot;
                for _ in 0..=retries {
                    if exchange(SocketAddr::new(ip, port), timeout).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "sweep_ms={} ok={} of={total}",
        started.elapsed().as_millis(),
        ok.load(Ordering::Relaxed)
    );
    tokio::time::sleep(o.lifetime).await;
    Ok(())
}

/// Answers each connection's line with one line, FIN riding on it.
async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut line = [0u8; 128];
            let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut line)).await;
            if matches!(read, Ok(Ok(n)) if n > 0) {
                let answer = b"PORTCALL-OK floor 0123456789abcdef\n";
                let sent = socket2::SockRef::from(&s)
                    .send_with_flags(answer, libc::MSG_MORE)
                    .unwrap_or(0);
                let _ = s.write_all(&answer[sent..]).await;
                let _ = s.shutdown().await;
            }
        });
    }
}

/// One exchange: connect within `timeout` (silence is not ok), send a
/// line, read the answer, reset. True when an answer came.
async fn exchange(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(socket) = (if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }) else {
        return false;
    };
    // As the prober: the line carries the handshake's last ACK.
    let _ = socket2::SockRef::from(&socket).set_tcp_quickack(false);
    let Ok(Ok(mut s)) = tokio::time::timeout(timeout, socket.connect(addr)).await else {
        return false;
    };
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    answered(&mut s).await
}

async fn answered(s: &mut TcpStream) -> bool {
    if s.write_all(b"PORTCALL 0123456789abcdef 0123456789abcdef\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut answer = [0u8; 128];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read(&mut answer)).await,
        Ok(Ok(n)) if n > 0
    )
}
