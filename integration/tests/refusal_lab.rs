//! A sweep's refusals between two lab hosts, where the target answers most
//! closed ports with a reset and a few with an ICMP port-unreachable (the
//! same `ECONNREFUSED` to `connect`): the loop reads a refused socket's
//! error queue only when the namespace's ICMP counter moved, so this checks
//! that every ICMP refusal still carries its evidence, and no reset gains
//! any, across the loop's batches.

use integration::{Lab, lab_available, portcall_bin};
use serde_json::{Value, json};

/// Nothing listens on the server: every port is refused, by a reset, except
/// these five, refused by its firewall with ICMP (fewer than Linux's burst
/// of six errors per peer, so none is rate-limited).
const RULES: &str = "
table ip lab {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 7300-7304 reject with icmp type port-unreachable
  }
}
";

#[test]
fn icmp_refusals_among_hundreds_of_resets_each_carry_their_icmp_and_resets_none() {
    if !lab_available() {
        return;
    }
    let lab = Lab::new(&["client", "server"]).expect("build the lab");
    lab.nft("server", RULES)
        .expect("load the server's firewall");
    let server = lab.host("server").addr.to_string();
    let bin = portcall_bin().expect("the portcall binary");
    let out = lab
        .command("client", &bin)
        .args(["probe", &format!("{server}:7000-7599"), "--retries", "0"])
        .args(["--timeout-ms", "2000", "--format", "json"])
        .output()
        .expect("run portcall");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "portcall printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 600);
    for r in results {
        let port = r["port"].as_u64().unwrap();
        assert_eq!(r["observed"], "refused", "{r}");
        assert!(
            r["detail"].as_str().unwrap().starts_with("ECONNREFUSED"),
            "{r}"
        );
        if (7300..=7304).contains(&port) {
            assert_eq!(
                r["icmp"],
                json!({"type": "port-unreachable", "code": 3, "from": server}),
                "{r}"
            );
        } else {
            assert_eq!(r.get("icmp"), None, "a reset carries no ICMP: {r}");
        }
    }
}
