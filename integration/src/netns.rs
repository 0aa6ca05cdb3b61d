//! What every lab offers its tests once its namespaces exist: commands,
//! processes and nftables rulesets inside a named host, so the flat
//! [`crate::Lab`] and the [`crate::RoutedLab`] share one implementation and
//! [`crate::PlanLab`] runs agents on either.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// A set of lab namespaces addressed by the names the test gave its hosts.
pub trait LabNet {
    /// The namespace of host `host`; panics when the lab has no such host,
    /// which is a mistake in the test.
    fn netns(&self, host: &str) -> &str;

    /// The `ip` tool (iproute2).
    fn ip_tool(&self) -> &Path;

    /// The processes started in the lab, killed when it is dropped.
    fn children(&self) -> &Mutex<Vec<Child>>;

    /// A command that runs `program` inside `host`'s namespace.
    fn command(&self, host: &str, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(self.ip_tool());
        c.args(["netns", "exec", self.netns(host)]).arg(program);
        c
    }

    /// Runs `program args` inside `host` and returns its output, whatever
    /// its exit status.
    fn output(
        &self,
        host: &str,
        program: impl AsRef<OsStr>,
        args: &[&str],
    ) -> anyhow::Result<Output> {
        let program = program.as_ref().to_os_string();
        self.command(host, &program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {} in lab host {host}", Path::new(&program).display()))
    }

    /// Runs `program args` inside `host` and fails unless it exits 0.
    fn run_ok(
        &self,
        host: &str,
        program: impl AsRef<OsStr>,
        args: &[&str],
    ) -> anyhow::Result<String> {
        let program = program.as_ref().to_os_string();
        let out = self.output(host, &program, args)?;
        ensure!(
            out.status.success(),
            "{} {} in lab host {host} failed: {}",
            Path::new(&program).display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Loads an nftables ruleset (nft syntax) inside `host`.
    fn nft(&self, host: &str, ruleset: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let nft = crate::find_tool("nft").context("`nft` (nftables) not found")?;
        let mut child = self
            .command(host, nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(ruleset.as_bytes())
            .context("write the ruleset to nft")?;
        let out = child.wait_with_output().context("wait for nft")?;
        ensure!(
            out.status.success(),
            "nft in lab host {host} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Sets a sysctl inside `host`'s namespace (only per-namespace keys,
    /// such as `net.ipv4.icmp_ratelimit`, stay inside it).
    fn sysctl(&self, host: &str, key: &str, value: &str) -> anyhow::Result<()> {
        let out = self.output(host, "sysctl", &["-q", "-w", &format!("{key}={value}")])?;
        ensure!(
            out.status.success(),
            "sysctl {key}={value} in lab host {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Starts `program args` inside `host`, waits until it prints a line
    /// `ready` on stdout (up to 20 s), and keeps it running until the lab is
    /// dropped.
    fn spawn_ready(
        &self,
        host: &str,
        program: impl AsRef<OsStr>,
        args: &[&str],
    ) -> anyhow::Result<()> {
        use std::io::BufRead;
        let mut child = self
            .command(host, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("start a lab process")?;
        let stdout = child.stdout.take().context("lab process stdout")?;
        self.children()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let ready = lines.any(|l| l.map(|l| l.trim() == "ready").unwrap_or(false));
            let _ = tx.send(ready);
            // Keep draining so the process never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(true) => Ok(()),
            Ok(false) => bail!("lab process in {host} exited before it was ready"),
            Err(_) => bail!("lab process in {host} not ready within 20 s"),
        }
    }

    /// Starts `program args` inside `host` with stdout and stderr appended
    /// to `log`, and keeps it running until the lab is dropped.
    fn spawn_logged(
        &self,
        host: &str,
        program: impl AsRef<OsStr>,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = self
            .command(host, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start a lab process in {host}"))?;
        self.children()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(())
    }

    /// Waits (up to `within`) until something listens on TCP `port` inside
    /// `host`, asking `ss` in that namespace rather than connecting, so that
    /// nothing in the root namespace touches the lab.
    fn wait_listening(&self, host: &str, port: u16, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let filter = format!("sport = :{port}");
        loop {
            let out = self.output(host, "ss", &["-Hltn", &filter])?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "nothing listens on port {port} in lab host {host} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Kills every process a lab started and waits for it.
/// Runs `ip ARGS` (iproute2 at `ip`) and fails with its own complaint.
pub(crate) fn run_ip(ip: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(ip)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run ip")?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

pub(crate) fn kill_children(children: &Mutex<Vec<Child>>) {
    let mut children = children.lock().unwrap_or_else(|e| e.into_inner());
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A hosts file for lab namespaces: `ip netns exec NAME` mounts
/// `/etc/netns/NAME/hosts` over `/etc/hosts` for the command it runs, so
/// agents and coordinators inside the lab resolve the test's names while
/// the machine's own `/etc/hosts` is never touched. Removed on drop.
#[derive(Debug)]
pub struct HostsFile {
    dirs: Vec<std::path::PathBuf>,
}

impl HostsFile {
    /// Writes `text` as the hosts file of each of `hosts`' namespaces
    /// (before anything in them is started: a command sees the file only
    /// if it exists when `ip netns exec` runs).
    pub fn write(lab: &impl LabNet, hosts: &[&str], text: &str) -> anyhow::Result<HostsFile> {
        let mut me = HostsFile { dirs: Vec::new() };
        for h in hosts {
            let dir = Path::new("/etc/netns").join(lab.netns(h));
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            me.dirs.push(dir.clone());
            std::fs::write(dir.join("hosts"), text)
                .with_context(|| format!("write {}/hosts", dir.display()))?;
        }
        Ok(me)
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
