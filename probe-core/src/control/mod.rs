//! The agents' control channel: the messages a coordinator and an agent
//! exchange during a round, their framing (one JSON object per line, with a
//! hard size cap), and the transports behind one trait (mutual TLS 1.3 to
//! the control port, plain TCP on loopback with `--insecure`, or an agent
//! started over `ssh` on its standard input and output). Both `portcall
//! check` and `portcall demo` speak it, so the demo exercises exactly what a
//! real check does.

mod frame;
mod messages;
mod nonce;
mod reply;
pub mod transport;

pub use frame::{FrameError, read_frame, write_frame};
pub use messages::{
    CanaryEvidence, ErrorReply, EvidenceReply, ForwardFlow, Forwarding, Handshake, HandshakeStage,
    HelloReply, HostPort, ListenerReport, ListenerState, ListeningSocket, NeighbourFailure,
    PROTOCOL_VERSION, PathProbe, PlanUpload, PrepareReply, PrepareRequest, ProbeReply,
    ProbeRequest, RenewReply, Request, Response, RoundRef, Sighting, SourceAddresses,
    SourcesTraced, SynSamples, TraceDirection, TraceEvidence, TraceSourcesRequest, TraceState,
    TraceStop, TracedFlow, TransportProtocol, VersionMismatch, listening_words, process_words,
};
pub use messages::{InterfaceState, RouteState, StateReply};
pub use nonce::Nonce;
pub use transport::mtls::{ClientSecurity, ServerSecurity, connect};
pub use transport::ssh::{SshOptions, SshTransport};
pub use transport::{ControlError, ControlStream, Dial, Transport, op_name};

use crate::plan::Plan;

/// Largest request frame an agent accepts, in bytes.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Largest plan an `agent --stdio --plan -` accepts on its input, in bytes.
pub const MAX_PLAN_UPLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Largest reply frame a coordinator accepts, in bytes.
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// A fingerprint of everything in a plan that a round depends on (hosts,
/// addresses, ports, paths, defaults), so that an agent and a coordinator
/// reading different plans notice before measuring anything.
///
/// FNV-1a is enough: both ends are authenticated by mutual TLS, so the
/// digest only has to catch accidents, not forgeries.
///
/// Taken one path at a time ([`Plan::digest`]), so an agent holding only
/// its own paths still has the whole plan's.
pub fn plan_digest(plan: &Plan) -> String {
    plan.digest()
}

/// A fresh random identifier of `bytes` bytes, as lowercase hex (round ids
/// and nonces).
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    crate::pki::random_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_changes_with_the_plan_and_ids_are_random_hex() {
        let src = r#"
name = "t"
[[hosts]]
name = "a"
address = "127.0.0.1"
[[hosts]]
name = "b"
address = "127.0.0.2"
roles = ["mysql"]
[[flows]]
from = "host:a"
to = "host:b"
ports = ["mysql"]
"#;
        let p1 = Plan::parse(src, "t.toml").unwrap();
        let p2 = Plan::parse(&src.replace("127.0.0.2", "127.0.0.3"), "t.toml").unwrap();
        assert_eq!(plan_digest(&p1), plan_digest(&p1.clone()));
        assert_ne!(plan_digest(&p1), plan_digest(&p2));
        // `[defaults] adaptive = false` is parsed and changes the digest;
        // plans without it keep theirs.
        let fixed = src.replace(
            "name = \"t\"\n",
            "name = \"t\"\n[defaults]\nadaptive = false\n",
        );
        let p3 = Plan::parse(&fixed, "t.toml").unwrap();
        assert!(p1.defaults.adaptive && !p3.defaults.adaptive);
        assert_ne!(plan_digest(&p1), plan_digest(&p3));
        let bad = src.replace(
            "name = \"t\"\n",
            "name = \"t\"\n[defaults]\nadaptive = \"no\"\n",
        );
        let e = Plan::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml:4"), "{e}");
        let (a, b) = (random_id(16), random_id(16));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
