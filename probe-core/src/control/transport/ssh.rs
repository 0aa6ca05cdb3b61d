//! The control channel over SSH: for each host the coordinator runs the
//! system `ssh` client (so the user's `~/.ssh/config`, agent, `ProxyJump`,
//! `ControlMaster` and known_hosts policy apply unchanged) with
//! `portcall agent --stdio --plan - --host NAME` as the remote command, and
//! speaks the control protocol over its standard input and output. No
//! control port is opened anywhere and no certificates are needed: SSH
//! authenticated both ends.
//!
//! With `push`, the running binary is streamed ahead of the plan into a
//! fresh private directory on the host, checked against its SHA-256 before
//! it runs, and removed by the remote shell when the agent exits, however
//! the session ends. Whatever ssh prints last is what a failed host
//! reports.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::{BoxFuture, ControlError, ControlIo, ControlStream, Dial, Transport};
use crate::control::messages::{PlanUpload, Request, Response};
use crate::plan::{Plan, SshTarget};

/// A pushed copy left by a session killed during the copy is removed by
/// the next push to that host as this user once it is this many minutes
/// old (longer than any setup deadline of a copy in flight).
const STALE_PUSH_MINUTES: u32 = 30;

/// How `check --ssh` runs ssh.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The ssh client (`ssh` on the PATH).
    pub program: PathBuf,
    /// `-F FILE`: an ssh_config to use instead of the user's.
    pub config_file: Option<PathBuf>,
    /// `-o` options, passed first so they win over portcall's defaults.
    pub options: Vec<String>,
    /// The remote `portcall` (default: `portcall` on the remote PATH).
    pub remote_path: Option<String>,
    /// Copy this binary to each host and run that copy (`--push`).
    pub push: Option<PathBuf>,
    /// Hosts being set up (ssh handshake, copy, hello) at once.
    pub parallel: usize,
    /// ssh's `ConnectTimeout`, unless an option sets it first.
    pub connect_timeout: Duration,
    /// Deadline of a host's whole setup: handshake, copy, plan, hello.
    pub setup_timeout: Duration,
}

impl Default for SshOptions {
    fn default() -> SshOptions {
        SshOptions {
            program: PathBuf::from("ssh"),
            config_file: None,
            options: Vec::new(),
            remote_path: None,
            push: None,
            parallel: 32,
            connect_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the SSH transport could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The binary to push could not be read.
    #[error("read {path} to push it")]
    ReadBinary {
        /// The binary.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `parallel` is zero.
    #[error("--ssh-parallel must be at least 1")]
    NoParallelism,
    /// A remote path ssh or the remote shell could read as an option.
    #[error(
        "--remote-path `{0}` starts with `-`: give a path (such as /usr/local/bin/portcall) or a command name"
    )]
    RemotePathOption(String),
}

/// The SSH transport of one round.
#[derive(Clone)]
pub struct SshTransport {
    inner: Arc<Inner>,
}

struct Inner {
    options: SshOptions,
    upload: Vec<u8>,
    targets: BTreeMap<String, SshTarget>,
    push: Option<Pushed>,
    slots: Arc<Semaphore>,
}

/// The binary to push and its checksum.
struct Pushed {
    bytes: Vec<u8>,
    sha256: String,
}

impl std::fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTransport")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl SshTransport {
    /// The transport for `plan`, whose text `plan_text` (read from
    /// `plan_source`) is handed to every remote agent.
    pub fn new(
        plan: &Plan,
        plan_text: &str,
        options: SshOptions,
    ) -> Result<SshTransport, SshError> {
        if options.parallel == 0 {
            return Err(SshError::NoParallelism);
        }
        if let Some(p) = options
            .remote_path
            .as_deref()
            .filter(|p| p.starts_with('-'))
        {
            return Err(SshError::RemotePathOption(p.to_owned()));
        }
        let push = match &options.push {
            None => None,
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| SshError::ReadBinary {
                    path: path.display().to_string(),
                    source,
                })?;
                let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
                Some(Pushed { bytes, sha256 })
            }
        };
        let mut upload = serde_json::to_vec(&PlanUpload {
            source: plan.source.to_string(),
            plan: plan_text.to_owned(),
        })
        .expect("a plan upload serializes");
        upload.push(b'\n');
        let targets = plan
            .hosts
            .iter()
            .filter_map(|h| h.ssh.clone().map(|t| (h.name.clone(), t)))
            .collect();
        Ok(SshTransport {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(options.parallel)),
                options,
                upload,
                targets,
                push,
            }),
        })
    }

    /// The ssh client's arguments for `target`, ending with the remote
    /// command that starts `host`'s agent.
    pub fn ssh_args(&self, target: &SshTarget, host: &str) -> Vec<String> {
        let o = &self.inner.options;
        let mut args = Vec::new();
        if let Some(f) = &o.config_file {
            args.push("-F".to_owned());
            args.push(f.display().to_string());
        }
        for opt in &o.options {
            args.push("-o".to_owned());
            args.push(opt.clone());
        }
        // ssh keeps the first value it sees: the user's options above win.
        // Nobody can answer a password prompt for parallel sessions.
        args.extend([
            "-o".to_owned(),
            "BatchMode=yes".to_owned(),
            "-o".to_owned(),
            format!("ConnectTimeout={}", o.connect_timeout.as_secs().max(1)),
            "-T".to_owned(),
        ]);
        // `--` ends ssh's options: nothing after it (the destination, the
        // remote command) is ever read as one, whatever it starts with.
        let mut destination = target.args();
        let name = destination.pop().unwrap_or_default();
        args.extend(destination);
        args.push("--".to_owned());
        args.push(name);
        args.push(self.remote_command(host));
        args
    }

    /// The command the remote login shell runs.
    fn remote_command(&self, host: &str) -> String {
        let agent = ["agent", "--stdio", "--plan", "-", "--host", host].map(quote);
        match &self.inner.push {
            None => {
                let bin = self
                    .inner
                    .options
                    .remote_path
                    .as_deref()
                    .unwrap_or("portcall");
                format!("{} {}", quote(bin), agent.join(" "))
            }
            Some(p) => {
                // Only the bytes that were verified run: the copy is
                // received into a fresh private directory under a parent
                // no one else can rename entries in, opened once, checked
                // (ours, a regular file, its SHA-256) and run through that
                // descriptor after its name is removed, so swapping names
                // changes nothing and a `kill -9` leaves nothing behind.
                // Every step is checked; any failure stops before running.
                let script = format!(
                    r#"umask 077
fail() {{ echo "portcall --push: $*; not run" >&2; exit 125; }}
uid=$(id -u) || fail "id -u failed"
p=$(cd -P -- "${{TMPDIR:-/tmp}}" && pwd -P) || fail "cannot enter ${{TMPDIR:-/tmp}}"
q=$p
while :; do
  m=$(stat -c '%u %a' -- "$q") || fail "cannot stat $q"
  o=${{m% *}}; a=${{m#* }}
  [ "$o" = "$uid" ] || [ "$o" = 0 ] || fail "$q is owned by uid $o, not by this user or root"
  if [ $((0$a & 022)) -ne 0 ] && [ $((0$a & 01000)) -eq 0 ]; then fail "$q is writable by others and not sticky (mode $a): set TMPDIR to a private directory"; fi
  [ "$q" = / ] && break
  q=${{q%/*}}; [ -n "$q" ] || q=/
done
find "$p" -maxdepth 1 -type d -name 'portcall-push.*' -user "$uid" -mmin +{stale} -exec rm -rf -- {{}} + 2>/dev/null
d=$(mktemp -d "$p/portcall-push.XXXXXXXX") || fail "mktemp -d in $p failed"
trap 'rm -rf -- "$d"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
[ "$(stat -c '%u %a' -- "$d")" = "$uid 700" ] || fail "$d is not private"
head -c {size} >"$d/portcall" || fail "receiving the copy failed"
command exec 3<"$d/portcall" || fail "cannot open the copy"
f=/proc/self/fd/3
[ "$(stat -L -c '%u %F' -- "$f")" = "$uid regular file" ] || fail "the copy is not a file of this user"
chmod 0700 "$f" || fail "chmod of the copy failed"
[ "$(stat -L -c '%a' -- "$f")" = 700 ] || fail "the copy's mode did not change"
s=$(sha256sum <&3) || fail "sha256sum failed"
[ "${{s%% *}}" = {sum} ] || fail "the copy does not match its SHA-256 {sum}"
rm -rf -- "$d" || fail "cannot remove $d"
trap - EXIT HUP INT TERM
exec "$f" {agent}"#,
                    size = p.bytes.len(),
                    sum = p.sha256,
                    stale = STALE_PUSH_MINUTES,
                    agent = agent.join(" "),
                );
                format!("sh -c {}", quote(&script))
            }
        }
    }
}

impl Transport for SshTransport {
    fn agents_outlive_connections(&self) -> bool {
        false
    }

    fn open(&self, dial: Dial) -> BoxFuture<Result<ControlStream, ControlError>> {
        let me = self.clone();
        Box::pin(async move {
            let inner = &me.inner;
            let Some(target) = inner.targets.get(&dial.host) else {
                return Err(ControlError::Transport {
                    host: dial.host.clone(),
                    peer: "ssh".into(),
                    message: "the plan gives no ssh destination for this host".into(),
                });
            };
            let peer = format!("ssh {target}");
            let fail = |message: String| ControlError::Transport {
                host: dial.host.clone(),
                peer: peer.clone(),
                message,
            };
            // Bounded setup: at most `parallel` handshakes at once.
            let _slot = inner
                .slots
                .acquire()
                .await
                .map_err(|_| fail("the round is over".into()))?;
            let args = me.ssh_args(target, &dial.host);
            tracing::debug!(host = %dial.host, ?args, "starting ssh");
            let mut child = Command::new(&inner.options.program)
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| fail(format!("start {}: {e}", inner.options.program.display())))?;
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(fail("ssh started without pipes".into()));
            };
            let tail = Arc::new(Mutex::new(Tail::default()));
            let stderr_task = tokio::spawn(keep_last_line(stderr, tail.clone(), dial.host.clone()));
            let io = SshIo {
                child,
                stdin: Some(stdin),
                stdout,
                tail,
                stderr_task: Some(stderr_task),
            };
            let mut stream = ControlStream::new(&dial.host, peer.clone(), Box::new(io));
            // A copy gets extra time at a slow link's pace (1 MB/s).
            let copy = inner
                .push
                .as_ref()
                .map_or(0, |p| p.bytes.len() as u64 / 1_000_000);
            let deadline = inner.options.setup_timeout + Duration::from_secs(copy);
            let setup = async {
                if let Some(p) = &inner.push {
                    stream.send_raw(&p.bytes).await?;
                }
                stream.send_raw(&inner.upload).await?;
                Ok::<(), std::io::Error>(())
            };
            let sent = timeout(deadline, setup).await;
            let sent = match sent {
                Err(_) => Err(format!(
                    "setup (copy and plan) took longer than {} s",
                    deadline.as_secs()
                )),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(())) => Ok(()),
            };
            if let Err(why) = sent {
                let said = stream.transport_failure().await;
                return Err(fail(said.unwrap_or(why)));
            }
            match stream.request(&Request::Hello, deadline).await {
                Ok(Response::Hello(h)) if h.host == dial.host => Ok(stream),
                Ok(Response::Hello(h)) => Err(fail(format!(
                    "the agent there plays {}, not {}",
                    h.host, dial.host
                ))),
                Ok(_) => Err(stream.unexpected(&Request::Hello)),
                Err(ControlError::RequestTimeout { after_ms, .. }) => {
                    let said = stream.transport_failure().await;
                    Err(fail(said.unwrap_or_else(|| {
                        format!("no hello from the agent within {after_ms} ms")
                    })))
                }
                Err(e) => Err(e),
            }
        })
    }
}

impl ControlStream {
    /// The transport's account of a failure (crate-internal).
    async fn transport_failure(&mut self) -> Option<String> {
        self.io.get_mut().failure().await
    }
}

/// ssh's standard input and output as one stream, with the process.
struct SshIo {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    tail: Arc<Mutex<Tail>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

impl AsyncRead for SshIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "ssh input closed")
}

impl AsyncWrite for SshIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.stdin.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(closed())),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stdin.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stdin.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl SshIo {
    /// Waits up to `deadline` for ssh to exit and for its last words.
    async fn exited(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let status = timeout(deadline, self.child.wait()).await.ok()?.ok();
        if let Some(task) = self.stderr_task.take() {
            let _ = timeout(Duration::from_secs(1), task).await;
        }
        status
    }
}

impl ControlIo for SshIo {
    fn failure(&mut self) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        Box::pin(async move {
            // Give ssh a moment to exit and print why.
            let code = self
                .exited(Duration::from_secs(3))
                .await
                .and_then(|s| s.code());
            let (mut line, error) = {
                let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
                (t.last.clone(), t.last_error.clone())
            };
            // A remote portcall that rejects its arguments (one too old for
            // --stdio, say) ends with clap's "For more information" line;
            // the line that says what is wrong came before it.
            if line.starts_with("For more information") && !error.is_empty() {
                line = format!("{error} (is the remote portcall this version? use --push)");
            }
            let mut message = match (line.is_empty(), code) {
                (false, _) => line,
                (true, Some(code)) => format!("ssh exited with status {code}"),
                (true, None) => return None,
            };
            if code == Some(127) {
                message.push_str(
                    " (is portcall on the remote PATH? use --push, or --remote-path PATH)",
                );
            }
            Some(message)
        })
    }

    fn finish(mut self: Box<Self>, deadline: Duration) -> BoxFuture<()> {
        Box::pin(async move {
            // End of input: the remote agent tears its round down and exits,
            // then the remote shell removes a pushed copy, then ssh exits.
            drop(self.stdin.take());
            if self.exited(deadline).await.is_none() {
                let _ = self.child.start_kill();
                let _ = self.exited(Duration::from_secs(1)).await;
            }
        })
    }
}

/// The end of ssh's standard error.
#[derive(Debug, Default)]
struct Tail {
    /// The last non-empty line.
    last: String,
    /// The last line starting with `error:`.
    last_error: String,
}

/// Reads ssh's standard error to its end, logging each line and keeping
/// the last non-empty one (at most 512 bytes) in `tail`.
async fn keep_last_line(
    mut stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<Tail>>,
    host: String,
) {
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let flush = |line: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if !text.is_empty() {
            tracing::debug!(%host, "ssh: {text}");
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            t.last = text
                .chars()
                .filter(|&c| !crate::plan::is_control(c))
                .collect();
            if t.last.starts_with("error:") {
                t.last_error = t.last.clone();
            }
        }
        line.clear();
    };
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        flush(&mut line);
                    } else if line.len() < 512 {
                        line.push(b);
                    }
                }
            }
        }
    }
    flush(&mut line);
}

/// Quotes `s` for a POSIX shell (as is when it needs no quoting).
pub fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+,-".contains(&b));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"name = "t"
[defaults]
ssh_user = "ops"
[[hosts]]
name = "a"
address = "198.18.0.10"
[[hosts]]
name = "b"
address = "198.18.0.11"
ssh = "root@b.lab:2222"
[[flows]]
from = "host:a"
to = "host:b"
ports = [22]
"#;

    #[test]
    fn quoting_survives_a_shell() {
        for s in ["plain", "with space", "it's", "$HOME `x` \"q\"", ""] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", quote(s))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn ssh_arguments_put_user_options_first_and_name_the_host() {
        let plan = Plan::parse(PLAN, "t.toml").unwrap();
        let t = SshTransport::new(
            &plan,
            PLAN,
            SshOptions {
                config_file: Some("/tmp/cfg".into()),
                options: vec!["BatchMode=no".into()],
                remote_path: Some("/opt/portcall bin/portcall".into()),
                ..SshOptions::default()
            },
        )
        .unwrap();
        let target = plan.host("b").unwrap().ssh.clone().unwrap();
        let args = t.ssh_args(&target, "b");
        assert_eq!(
            args[..8],
            [
                "-F",
                "/tmp/cfg",
                "-o",
                "BatchMode=no",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10"
            ]
        );
        assert_eq!(args[8..12], ["-T", "-p", "2222", "--"]);
        assert_eq!(args[12], "root@b.lab");
        assert_eq!(
            args[13],
            "'/opt/portcall bin/portcall' agent --stdio --plan - --host b"
        );
    }

    #[test]
    fn a_remote_path_ssh_could_read_as_an_option_is_refused() {
        let plan = Plan::parse(PLAN, "t.toml").unwrap();
        let err = SshTransport::new(
            &plan,
            PLAN,
            SshOptions {
                remote_path: Some("-oProxyCommand=touch /tmp/pwned".into()),
                ..SshOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, SshError::RemotePathOption(_)), "{err}");
        assert!(err.to_string().contains("starts with `-`"), "{err}");
    }

    /// Runs `t`'s remote command for host `a` in a local shell, as sshd
    /// would, with `TMPDIR` and `PATH` set and `input` on its stdin.
    fn run_remote(
        t: &SshTransport,
        tmpdir: &std::path::Path,
        path: Option<&std::path::Path>,
        input: &[u8],
    ) -> std::process::Output {
        use std::io::Write;
        let cmd = t.remote_command("a");
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", &cmd]).env("TMPDIR", tmpdir);
        if let Some(dir) = path {
            let old = std::env::var("PATH").unwrap_or_default();
            sh.env("PATH", format!("{}:{old}", dir.display()));
        }
        let mut child = sh
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The shell may stop reading early (a refused TMPDIR).
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().unwrap()
    }

    /// A transport pushing a fake agent that prints its arguments.
    fn fake_push(dir: &std::path::Path) -> (SshTransport, Vec<u8>) {
        use std::os::unix::fs::PermissionsExt;
        let fake = dir.join("fake");
        std::fs::write(&fake, "#!/bin/sh\necho \"ran $# $*\"; cat >/dev/null\n").unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let plan = Plan::parse(PLAN, "t.toml").unwrap();
        let t = SshTransport::new(
            &plan,
            PLAN,
            SshOptions {
                push: Some(fake.clone()),
                ..SshOptions::default()
            },
        )
        .unwrap();
        let mut input = std::fs::read(&fake).unwrap();
        input.extend_from_slice(b"{\"plan\":\"...\"}\n");
        (t, input)
    }

    #[test]
    fn a_pushed_copy_is_checked_run_and_removed_by_the_remote_shell() {
        // The remote command, run by a local shell against a fake binary:
        // the copy is verified, run with the agent's arguments, removed.
        let dir = tempfile::tempdir().unwrap();
        let (t, input) = fake_push(dir.path());
        let out = run_remote(&t, dir.path(), None, &input);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ran 6 agent --stdio --plan - --host a\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A corrupted copy is refused and never run.
        let mut bad = input.clone();
        bad[12] ^= 1;
        let out = run_remote(&t, dir.path(), None, &bad);
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("does not match its SHA-256"));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "fake")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn push_runs_the_verified_bytes_even_when_the_directory_is_swapped_after_the_check() {
        // The audit's race, won on every try: a `sha256sum` that checks
        // the genuine copy and then swaps the pushed directory for one
        // holding another binary (what a local user could do in a
        // world-writable TMPDIR). Only the verified bytes may run.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (t, input) = fake_push(dir.path());
        let bin = tempfile::tempdir().unwrap();
        let wrapper = bin.path().join("sha256sum");
        let real = ["/usr/bin/sha256sum", "/bin/sha256sum"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("sha256sum is installed");
        std::fs::write(
            &wrapper,
            format!(
                r#"#!/bin/sh
out=$({real} "$@"); st=$?
for d in "$TMPDIR"/portcall-push.*; do
  mv "$d" "$d.moved"; mkdir "$d"
  printf '#!/bin/sh\necho evil\n' >"$d/portcall"; chmod 0755 "$d/portcall"
done
printf '%s\n' "$out"; exit $st
"#
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = run_remote(&t, dir.path(), Some(bin.path()), &input);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ran 6 agent --stdio --plan - --host a\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn push_refuses_a_tmpdir_others_can_write_unless_it_is_sticky() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (t, input) = fake_push(dir.path());
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = run_remote(&t, &shared, None, &input);
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("writable by others and not sticky (mode 777)"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
        // Sticky, like /tmp: accepted.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let out = run_remote(&t, &shared, None, &input);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ran 6 agent --stdio --plan - --host a\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn push_removes_a_stale_copy_left_by_a_killed_session() {
        let dir = tempfile::tempdir().unwrap();
        let (t, input) = fake_push(dir.path());
        let stale = dir.path().join("portcall-push.OLDCOPY1");
        let fresh = dir.path().join("portcall-push.NEWCOPY1");
        for d in [&stale, &fresh] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("portcall"), b"12 MB of agent").unwrap();
        }
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        let f = std::fs::File::open(&stale).unwrap();
        f.set_modified(old).unwrap();
        let out = run_remote(&t, dir.path(), None, &input);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stale.exists(), "a copy an hour old survives the next push");
        assert!(fresh.exists(), "a copy in flight was removed");
    }
}
