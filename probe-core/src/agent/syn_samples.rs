//! The target's count of TCP quality samples (`check --samples`): each
//! sample is one SYN whose MSS option is
//! [`crate::probe::samples::SAMPLE_MSS`], so the round's trace table counts
//! those SYNs per source address and port after every input filter of the
//! host (priority 500 on the input hook, where a packet is about to reach
//! the canary's socket), in two dynamic sets with a counter per element,
//! added to the table apart from its tracing rules so that a kernel
//! refusing them costs only the counts.
//! The counts are read back at `evidence`; where the agent has no trace
//! table (no CAP_NET_ADMIN, no `nft`) there is no count, and the report
//! says so (`arrived` null), never a guess.

use std::net::IpAddr;

use super::nft_cmd::{nft_path, nft_retried};
use crate::control::SynSamples;
use crate::probe::samples::SAMPLE_MSS;

/// Most (source, port) pairs counted per family.
const MAX_PAIRS: u32 = 65_535;

/// The sets and chain the trace table gains, elements timing out after
/// `secs` seconds (the round's TTL).
pub(super) fn ruleset_part(secs: u64) -> String {
    let mut s = String::new();
    for (set, kind) in [("qsyn4", "ipv4_addr"), ("qsyn6", "ipv6_addr")] {
        s.push_str(&format!(
            "  set {set} {{\n    type {kind} . inet_service\n    size {MAX_PAIRS}\n    flags dynamic,timeout\n    timeout {secs}s\n    counter\n  }}\n"
        ));
    }
    let syn = format!("tcp flags & (fin|syn|rst|ack) == syn tcp option maxseg size {SAMPLE_MSS}");
    s.push_str(&format!(
        "  chain qsyn {{\n    type filter hook input priority 500; policy accept;\n    ip saddr . tcp dport @in4 {syn} update @qsyn4 {{ ip saddr . tcp dport }}\n    ip6 saddr . tcp dport @in6 {syn} update @qsyn6 {{ ip6 saddr . tcp dport }}\n  }}\n"
    ));
    s
}

/// Adds the counting sets and chain to trace table `inet table`, their
/// elements living `ttl`; where this kernel or `nft` refuses them the
/// round goes on without counts (tracing is not touched).
pub(super) async fn add(bin: &std::path::Path, table: &str, ttl: std::time::Duration) {
    let secs = ttl.as_secs().max(1) + u64::from(ttl.subsec_nanos() > 0);
    let script = format!("table inet {table} {{\n{}}}\n", ruleset_part(secs));
    // Tried twice: a count lost costs the round its loss per direction.
    if let Err(e) = nft_retried(bin, &["-f", "-"], Some(&script)).await {
        tracing::warn!(table, error = %e, "tcp quality samples will not be counted here");
    }
}

/// The counts in trace table `inet table`; `None` when they cannot be
/// read.
pub(super) async fn read(table: &str) -> Option<Vec<SynSamples>> {
    let bin = nft_path()?;
    let mut out = Vec::new();
    for set in ["qsyn4", "qsyn6"] {
        let args = ["-j", "list", "set", "inet", table, set];
        let json = match nft_retried(&bin, &args, None).await {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(table, set, error = %e, "the tcp quality samples' counts cannot be read");
                return None;
            }
        };
        let Some(counts) = parse(&json) else {
            tracing::warn!(
                table,
                set,
                "the tcp quality samples' counts are not in the form expected"
            );
            return None;
        };
        out.extend(counts);
    }
    out.sort_by_key(|s| (s.source, s.port));
    Some(out)
}

/// The elements of one set as `nft -j list set` prints them.
fn parse(json: &str) -> Option<Vec<SynSamples>> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let set = v["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o.get("set"))?;
    let Some(elems) = set.get("elem").and_then(|e| e.as_array()) else {
        return Some(Vec::new());
    };
    Some(
        elems
            .iter()
            .filter_map(|e| {
                let e = &e["elem"];
                let key = e["val"]["concat"].as_array()?;
                Some(SynSamples {
                    source: key.first()?.as_str()?.parse::<IpAddr>().ok()?,
                    port: u16::try_from(key.get(1)?.as_u64()?).ok()?,
                    syns: u32::try_from(e["counter"]["packets"].as_u64()?).ok()?,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_from_nft_json_and_an_empty_set_is_none_counted() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "qsyn4", "table": "t", "type": ["ipv4_addr", "inet_service"], "elem": [{"elem": {"val": {"concat": ["198.18.0.90", 15502]}, "expires": 59, "counter": {"packets": 774, "bytes": 46440}}}]}}]}"#;
        assert_eq!(
            parse(json),
            Some(vec![SynSamples {
                source: "198.18.0.90".parse().unwrap(),
                port: 15502,
                syns: 774
            }])
        );
        let empty = r#"{"nftables": [{"set": {"family": "inet", "name": "qsyn6"}}]}"#;
        assert_eq!(parse(empty), Some(Vec::new()));
        assert_eq!(parse("not json"), None);
        let part = ruleset_part(30);
        assert!(
            part.contains("tcp option maxseg size 1211 update @qsyn4"),
            "{part}"
        );
        assert!(part.contains("hook input priority 500"), "{part}");
    }
}
