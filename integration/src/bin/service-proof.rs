//! `service-proof`: portcall's service proof (the engine's own
//! `probe::service::check`, byte for byte what a round sends) run N times
//! against one server, each on a fresh connection, with the second form
//! (HTTP `GET`, Thrift framed) on another connection where the first asks
//! for it, exactly as a round's second pass does. The lab test that runs it
//! reads the server's own logs afterwards: what N proofs cost the server.
//!
//! Usage: `service-proof http|thrift|mysql|amqp ADDR:PORT N [HOST_NAME]`. The address
//! must be a lab address (198.18.0.0/15) or loopback. Prints one line per
//! proof level reached (`healthy 1000`) and one per failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use probe_core::plan::ServiceKind;
use probe_core::probe::service::{ServicePlan, check};
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, addr, n, rest @ ..] = args.as_slice() else {
        bail!("usage: service-proof http|thrift|mysql|amqp ADDR:PORT N [HOST_NAME]");
    };
    let kind = match kind.as_str() {
        "http" => ServiceKind::Http,
        "thrift" => ServiceKind::Thrift,
        "mysql" => ServiceKind::Mysql,
        "amqp" => ServiceKind::Amqp,
        other => bail!("service-proof: {other} is not http, thrift, mysql or amqp"),
    };
    let addr: SocketAddr = addr.parse().context("ADDR:PORT")?;
    let lab = match addr.ip() {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback() || (v4.octets()[0] == 198 && v4.octets()[1] & 0xfe == 18)
        }
        std::net::IpAddr::V6(v6) => v6.is_loopback(),
    };
    if !lab {
        bail!("service-proof: {addr} is neither loopback nor a lab address");
    }
    let n: usize = n.parse().context("N")?;
    if n > 100_000 {
        bail!("service-proof: at most 100000 proofs");
    }
    let plan = ServicePlan {
        kind,
        host: rest
            .first()
            .cloned()
            .unwrap_or_else(|| addr.ip().to_string()),
        planned: true,
    };
    let wait = Duration::from_secs(2);
    let mut levels: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.context("connect")?;
        let mut got = check(&plan, None, &mut stream, wait).await;
        drop(stream);
        if let Some(again) = got.again {
            let mut stream = TcpStream::connect(addr).await.context("connect")?;
            got = check(&plan, Some(again), &mut stream, wait).await;
        }
        let key = match &got.wrong {
            Some(why) => format!("wrong {why}"),
            None => got.proof.as_str().to_string(),
        };
        *levels.entry(key).or_default() += 1;
    }
    for (level, count) in levels {
        println!("{level} {count}");
    }
    Ok(())
}
