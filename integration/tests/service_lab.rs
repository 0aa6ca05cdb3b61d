//! Proof that the right service answered, against real servers inside a
//! lab namespace: nginx (HTTP, and HTTPS with a test-generated
//! certificate), a Thrift server built on python3-thrift's `TSimpleServer`
//! and `TBinaryProtocol`, nginx again on a port the plan gives Thrift, and
//! a socket that accepts and never answers on a port the plan gives AMQP.
//! A real `portcall check` runs from the client; the servers' own logs
//! show what each probe sent: one request per connection, no credentials.

use std::path::Path;
use std::time::Duration;

use integration::{PlanLab, lab_available};
use probe_core::probe::Observed;
use probe_core::probe::service::Proof;
use probe_core::report::{PathReport, Verdict};

const PLAN: &str = r#"name = "service-proof"
[defaults]
timeout_ms = 1500
retries = 1

[[hosts]]
name = "client"
address = "198.18.0.61"

[[hosts]]
name = "svc"
address = "198.18.0.62"
roles = ["svc"]

[roles.svc]
ports = [
  { name = "console", port = 8080, offset = false, service = "http" },
  { name = "console-tls", port = 8443, offset = false, protocol = "tls", service = "https" },
  { name = "thrift-km", port = 9090, offset = false, service = "thrift" },
  { name = "thrift-misplaced", port = 9091, offset = false, service = "thrift" },
  { name = "broker", port = 5673, offset = false, service = "amqp" },
]

[[flows]]
from = "host:client"
to = "host:svc"
ports = ["console", "console-tls", "thrift-km", "thrift-misplaced", "broker"]
"#;

/// A Thrift server as python3-thrift serves one: `TSimpleServer`,
/// `TBufferedTransport`, `TBinaryProtocol`; its processor dispatches as
/// the Thrift compiler's generated `Processor.process` does (an unknown
/// name is skipped and answered with `UNKNOWN_METHOD`), and records every
/// message's name.
const THRIFT_SERVER: &str = r#"
import sys
from thrift.Thrift import TApplicationException, TMessageType, TProcessor, TType
from thrift.protocol import TBinaryProtocol
from thrift.server import TServer
from thrift.transport import TSocket, TTransport

addr, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Processor(TProcessor):
    _processMap = {}

    def process(self, iprot, oprot):
        name, _, seqid = iprot.readMessageBegin()
        with open(log, "a") as f:
            f.write(name + "\n")
        if name not in self._processMap:
            iprot.skip(TType.STRUCT)
            iprot.readMessageEnd()
            x = TApplicationException(TApplicationException.UNKNOWN_METHOD, "Unknown function %s" % name)
            oprot.writeMessageBegin(name, TMessageType.EXCEPTION, seqid)
            x.write(oprot)
            oprot.writeMessageEnd()
            oprot.trans.flush()

server = TServer.TSimpleServer(
    Processor(),
    TSocket.TServerSocket(host=addr, port=port),
    TTransport.TBufferedTransportFactory(),
    TBinaryProtocol.TBinaryProtocolFactory(),
)
server.serve()
"#;

/// Accepts, never answers, and records the bytes of each connection.
const SILENT_SERVER: &str = r#"
import socket, sys, threading
addr, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(64)
lock = threading.Lock()
def serve(c):
    data, how = b"", "fin"
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            data += d
    except ConnectionResetError:
        how = "reset"
    with lock, open(log, "a") as f:
        f.write("%s %s\n" % (how, data.hex()))
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn nginx_conf(dir: &Path, addr: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           log_format full '$server_port \"$request\" $status \"$http_authorization\" \"$http_cookie\"';\n\
           server {{ listen {addr}:8080; access_log {d}/access.log full; location / {{ return 302 /carbon/; }} }}\n\
           server {{ listen {addr}:8443 ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n\
             access_log {d}/access.log full; location / {{ return 200 ok; }} }}\n\
           server {{ listen {addr}:9091; access_log {d}/access.log full; location / {{ return 200 ok; }} }}\n\
         }}\n"
    )
}

fn tool(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The servers this test runs, or why they are missing (skip locally,
/// fail under `PORTCALL_REQUIRE_LAB=1`).
fn servers_available() -> bool {
    let thrift = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import thrift"])
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = match (tool("nginx"), tool("openssl"), thrift) {
        (Some(_), Some(_), true) => return true,
        _ => "needs nginx (nginx-light), openssl and python3-thrift",
    };
    if std::env::var(integration::REQUIRE_LAB_ENV).as_deref() == Ok("1") {
        panic!("{}=1 but {missing}", integration::REQUIRE_LAB_ENV);
    }
    eprintln!("skipped: {missing}");
    false
}

/// Kills every process still living in a namespace when dropped (before
/// the lab, so also when a test panics): daemons such as nginx's workers,
/// RabbitMQ's Erlang VM and the `epmd` it forks outlive the process the lab
/// started and would outlive the namespace.
struct Reaper(Vec<String>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for _ in 0..2 {
            for ns in &self.0 {
                let Ok(out) = std::process::Command::new("ip")
                    .args(["netns", "pids", ns])
                    .output()
                else {
                    continue;
                };
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", pid])
                        .status();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn path(paths: &[PathReport], port: u16) -> &PathReport {
    paths.iter().find(|p| p.port == port).unwrap()
}

#[test]
fn each_protocol_is_proven_on_its_port_and_wrong_services_say_what_answered() {
    if !lab_available() || !servers_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.toml");
    std::fs::write(&plan_file, PLAN).unwrap();
    let lab = PlanLab::new(&plan_file).unwrap();
    let _reaper = Reaper(vec![lab.lab.host("svc").netns.clone()]);
    let addr = lab.addr("svc").to_string();
    let run_dir = lab.dir.path().join("servers");
    std::fs::create_dir_all(&run_dir).unwrap();
    let d = |f: &str| run_dir.join(f).display().to_string();

    let out = std::process::Command::new(tool("openssl").unwrap())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=svc",
            "-keyout",
            &d("key.pem"),
            "-out",
            &d("cert.pem"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(run_dir.join("nginx.conf"), nginx_conf(&run_dir, &addr)).unwrap();
    std::fs::write(run_dir.join("thrift_server.py"), THRIFT_SERVER).unwrap();
    std::fs::write(run_dir.join("silent_server.py"), SILENT_SERVER).unwrap();

    let nginx = tool("nginx").unwrap();
    lab.lab
        .spawn_logged(
            "svc",
            &nginx,
            &["-p", &d(""), "-c", &d("nginx.conf")],
            &run_dir.join("nginx.out"),
        )
        .unwrap();
    lab.lab
        .spawn_logged(
            "svc",
            "/usr/bin/python3",
            &[&d("thrift_server.py"), &addr, "9090", &d("thrift.log")],
            &run_dir.join("thrift.out"),
        )
        .unwrap();
    lab.lab
        .spawn_logged(
            "svc",
            "/usr/bin/python3",
            &[&d("silent_server.py"), &addr, "5673", &d("silent.log")],
            &run_dir.join("silent.out"),
        )
        .unwrap();
    for port in [8080, 8443, 9090, 9091, 5673] {
        lab.lab
            .wait_listening("svc", port, Duration::from_secs(15))
            .unwrap_or_else(|e| {
                let logs: String = ["nginx.out", "nginx-error.log", "thrift.out", "silent.out"]
                    .iter()
                    .map(|f| std::fs::read_to_string(run_dir.join(f)).unwrap_or_default())
                    .collect();
                panic!("{e:#}\n{logs}")
            });
    }
    lab.start_agents().unwrap();
    let run = lab.check("client").unwrap();
    let paths = &run.report.paths;

    // HTTP: nginx's redirect, read and not followed: healthy.
    let http = path(paths, 8080);
    assert_eq!(http.observed, Some(Observed::Open), "{http:?}");
    assert_eq!(http.proof, Some(Proof::Healthy), "{http:?}");
    let a = http.service_answer.as_ref().unwrap();
    assert_eq!(
        (a.protocol.as_str(), a.status.as_deref()),
        ("http", Some("302"))
    );
    assert_eq!(a.product.as_deref(), Some("nginx"));
    assert!(
        a.detail.contains("/carbon/") && a.detail.contains("not followed"),
        "{a:?}"
    );

    // HTTPS: the same bytes inside TLS.
    let https = path(paths, 8443);
    assert_eq!(https.proof, Some(Proof::Healthy), "{https:?}");
    assert_eq!(https.service_answer.as_ref().unwrap().protocol, "https");

    // Thrift: the real server's UNKNOWN_METHOD exception.
    let thrift = path(paths, 9090);
    assert_eq!(thrift.observed, Some(Observed::Open), "{thrift:?}");
    assert_eq!(thrift.proof, Some(Proof::Healthy), "{thrift:?}");
    let a = thrift.service_answer.as_ref().unwrap();
    assert_eq!(a.status.as_deref(), Some("UNKNOWN_METHOD"), "{a:?}");

    // HTTP where Thrift was planned: wrong service, a violation, naming
    // what answered.
    let misplaced = path(paths, 9091);
    assert_eq!(
        misplaced.observed,
        Some(Observed::WrongService),
        "{misplaced:?}"
    );
    assert_eq!(misplaced.verdict, Verdict::Violation);
    let a = misplaced.service_answer.as_ref().unwrap();
    assert_eq!(
        (a.protocol.as_str(), a.status.as_deref()),
        ("http", Some("400")),
        "{a:?}"
    );
    assert!(
        misplaced.detail.contains("wrong service"),
        "{}",
        misplaced.detail
    );

    // A bare accept where AMQP was planned: wrong service, nothing answered.
    let broker = path(paths, 5673);
    assert_eq!(broker.observed, Some(Observed::WrongService), "{broker:?}");
    assert_eq!(broker.verdict, Verdict::Violation);
    assert_eq!(broker.service_answer, None);
    assert_eq!(broker.proof, Some(Proof::L4));
    assert!(
        broker.detail.contains("nothing answered the amqp request"),
        "{}",
        broker.detail
    );

    // What the servers saw: one request per connection, no credentials,
    // and every connection to the silent broker closed with a FIN.
    let access = std::fs::read_to_string(run_dir.join("access.log")).unwrap();
    for line in access.lines() {
        assert!(
            line.ends_with("\"-\" \"-\""),
            "credentials or cookies sent: {line}"
        );
    }
    let on = |port: &str| access.lines().filter(|l| l.starts_with(port)).count();
    assert_eq!(on("8080 "), http.attempts as usize, "{access}");
    assert!(access.contains("8080 \"HEAD / HTTP/1.1\" 302"), "{access}");
    assert_eq!(on("8443 "), https.attempts as usize, "{access}");
    let thrift_log = std::fs::read_to_string(run_dir.join("thrift.log")).unwrap();
    assert_eq!(
        thrift_log.lines().collect::<Vec<_>>(),
        vec!["portcall_proof"; thrift.attempts as usize]
    );
    let silent = std::fs::read_to_string(run_dir.join("silent.log")).unwrap();
    assert_eq!(silent.lines().count(), broker.attempts as usize, "{silent}");
    for line in silent.lines() {
        assert_eq!(line, "fin 414d515000000901", "{silent}");
    }

    // A thousand proofs against each server, by the engine's own code on
    // fresh connections: each server saw exactly one request per proof,
    // and its own logs gained nothing at warning level or above (nginx
    // logs at `info` here, so a client that left would show).
    let serious = || -> Vec<String> {
        let log = std::fs::read_to_string(run_dir.join("nginx-error.log")).unwrap_or_default();
        let thrift = std::fs::read_to_string(run_dir.join("thrift.out")).unwrap_or_default();
        log.lines()
            .filter(|l| {
                ["[warn]", "[error]", "[crit]", "[alert]", "[emerg]"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .chain(thrift.lines().filter(|l| !l.trim().is_empty()))
            .map(str::to_string)
            .collect()
    };
    let before = serious();
    let requests = |port: &str| {
        let access = std::fs::read_to_string(run_dir.join("access.log")).unwrap();
        let thrift = std::fs::read_to_string(run_dir.join("thrift.log")).unwrap();
        if port == "9090" {
            thrift.lines().count()
        } else {
            access
                .lines()
                .filter(|l| l.starts_with(&format!("{port} ")))
                .count()
        }
    };
    for (service, port) in [("http", "8080"), ("thrift", "9090")] {
        let had = requests(port);
        let out = lab
            .lab
            .command("client", env!("CARGO_BIN_EXE_service-proof"))
            .args([service, &format!("{addr}:{port}"), "1000", "svc"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "healthy 1000\n",
            "{service}: every proof healthy"
        );
        assert_eq!(
            requests(port) - had,
            1000,
            "{service}: one request per proof"
        );
    }
    let info = std::fs::read_to_string(run_dir.join("nginx-error.log")).unwrap_or_default();
    eprintln!(
        "after 1,000 HTTP and 1,000 Thrift proofs: nginx error log {} lines (info and above), {} at warn or above",
        info.lines().count(),
        serious().len()
    );
    assert_eq!(serious(), before, "the servers logged warnings or errors");
}

const BROKER_PLAN: &str = r#"name = "broker-proof"
[defaults]
timeout_ms = 1500
retries = 1

[[hosts]]
name = "gw"
address = "198.18.0.63"

[[hosts]]
name = "tm"
address = "198.18.0.64"
roles = ["wso2-apim-trafficmanager"]

[[flows]]
from = "host:gw"
to = "host:tm"
ports = ["broker"]
"#;

/// The catalog's traffic manager plans its JMS broker (5672) as AMQP: a
/// real RabbitMQ there (its own node name, cookie and data dirs inside the
/// lab) answers the header with `Connection.Start`, naming itself.
#[test]
fn a_real_rabbitmq_on_the_brokers_port_is_healthy_and_named() {
    if !lab_available() {
        return;
    }
    let Some(server) = [
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        "/usr/sbin/rabbitmq-server",
    ]
    .iter()
    .map(Path::new)
    .find(|p| p.is_file()) else {
        let reason = "needs rabbitmq-server";
        if std::env::var(integration::REQUIRE_LAB_ENV).as_deref() == Ok("1") {
            panic!("{}=1 but {reason}", integration::REQUIRE_LAB_ENV);
        }
        eprintln!("skipped: {reason}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.toml");
    std::fs::write(&plan_file, BROKER_PLAN).unwrap();
    let lab = PlanLab::new(&plan_file).unwrap();
    let _reaper = Reaper(vec![lab.lab.host("tm").netns.clone()]);
    let addr = lab.addr("tm").to_string();
    let rmq = lab.dir.path().join("rabbitmq");
    for sub in ["home", "mnesia", "log"] {
        std::fs::create_dir_all(rmq.join(sub)).unwrap();
    }
    let cookie = rmq.join("home/.erlang.cookie");
    std::fs::write(&cookie, "portcall-service-lab").unwrap();
    std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    std::fs::write(rmq.join("plugins"), "[].").unwrap();
    let r = |f: &str| rmq.join(f).display().to_string();
    let env = [
        format!("HOME={}", r("home")),
        "RABBITMQ_NODENAME=rabbit@localhost".to_string(),
        format!("RABBITMQ_NODE_IP_ADDRESS={addr}"),
        "RABBITMQ_NODE_PORT=5672".to_string(),
        "ERL_EPMD_ADDRESS=127.0.0.1".to_string(),
        format!("RABBITMQ_MNESIA_BASE={}", r("mnesia")),
        format!("RABBITMQ_LOG_BASE={}", r("log")),
        format!("RABBITMQ_ENABLED_PLUGINS_FILE={}", r("plugins")),
        format!("RABBITMQ_CONFIG_FILE={}", r("rabbitmq")),
        format!("RABBITMQ_PID_FILE={}", r("pid")),
    ];
    let mut args: Vec<&str> = env.iter().map(String::as_str).collect();
    let server = server.display().to_string();
    args.push(&server);
    lab.lab
        .spawn_logged("tm", "/usr/bin/env", &args, &rmq.join("out.log"))
        .unwrap();
    lab.lab
        .output("tm", "ip", &["link", "set", "lo", "up"])
        .unwrap();
    lab.lab
        .wait_listening("tm", 5672, Duration::from_secs(40))
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}",
                std::fs::read_to_string(rmq.join("out.log")).unwrap_or_default()
            )
        });
    lab.start_agents().unwrap();
    let run = lab.check("gw").unwrap();
    let broker = path(&run.report.paths, 5672);
    assert_eq!(broker.observed, Some(Observed::Open), "{broker:?}");
    assert_eq!(broker.verdict, Verdict::Ok);
    assert_eq!(broker.proof, Some(Proof::Healthy), "{broker:?}");
    let a = broker.service_answer.as_ref().unwrap();
    assert_eq!(a.protocol, "amqp");
    assert_eq!(a.product.as_deref(), Some("RabbitMQ"), "{a:?}");
    assert!(
        a.version.as_deref().is_some_and(|v| v.starts_with('3')),
        "{a:?}"
    );
}
