//! OpenSSH inside lab hosts, for `check --ssh` end to end: test-generated
//! host and client keys, an `sshd` per host started inside that host's
//! namespace only (on its lab address, in the foreground, with its own
//! config), and a client ssh_config (`ssh -F`) with its own known_hosts, so
//! neither the machine's sshd nor the user's ssh configuration is touched.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};

use crate::{Lab, LabNet};

/// How one host's sshd is set up, faults included.
#[derive(Debug, Clone)]
pub struct Sshd {
    /// The port it listens on.
    pub port: u16,
    /// Whether the client's key is authorized (false: a stranger's is).
    pub authorize_client: bool,
    /// Whether the client's known_hosts holds this host's real key (false:
    /// another key, as after a reinstall or with an impostor).
    pub known_host_key: bool,
    /// `PATH` of the sessions (`SetEnv`), when it must differ from sshd's
    /// default, e.g. to put `portcall` on it.
    pub path: Option<String>,
}

impl Default for Sshd {
    fn default() -> Sshd {
        Sshd {
            port: 22,
            authorize_client: true,
            known_host_key: true,
            path: None,
        }
    }
}

/// The SSH side of a lab: keys, configs, the client's ssh_config.
#[derive(Debug)]
pub struct SshLab {
    dir: PathBuf,
}

/// Why the SSH lab cannot run here, or `None`.
pub fn ssh_missing() -> Option<String> {
    for p in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        if !Path::new(p).is_file() {
            return Some(format!(
                "needs {p} (Debian packages openssh-server and openssh-client)"
            ));
        }
    }
    None
}

impl SshLab {
    /// Generates the client's key and a stranger's key under `dir`, and
    /// writes the client's ssh_config.
    pub fn new(dir: &Path) -> anyhow::Result<SshLab> {
        let dir = dir.join("ssh");
        std::fs::create_dir_all(&dir)?;
        let me = SshLab { dir };
        me.keygen("client")?;
        me.keygen("stranger")?;
        me.keygen("impostor")?;
        std::fs::write(me.dir.join("known_hosts"), "")?;
        let mut cfg = String::new();
        let _ = write!(
            cfg,
            "Host *\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  UpdateHostKeys no\n  CheckHostIP no\n  ControlMaster no\n  LogLevel ERROR\n  KexAlgorithms curve25519-sha256\n  Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com\n",
            key = me.dir.join("client").display(),
            known = me.dir.join("known_hosts").display(),
        );
        std::fs::write(me.config(), cfg)?;
        Ok(me)
    }

    /// The client's ssh_config, for `check --ssh-config`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    fn keygen(&self, name: &str) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        if path.exists() {
            return Ok(());
        }
        let out = Command::new("/usr/bin/ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .context("run ssh-keygen")?;
        ensure!(
            out.status.success(),
            "ssh-keygen {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn public(&self, name: &str) -> anyhow::Result<String> {
        Ok(
            std::fs::read_to_string(self.dir.join(format!("{name}.pub")))?
                .trim()
                .to_owned(),
        )
    }

    /// Starts sshd inside lab host `host` on its lab address as `sshd`
    /// says, waits until it listens, and records its key (or, for a fault,
    /// another key) in the client's known_hosts.
    pub fn start(&self, lab: &Lab, host: &str, sshd: &Sshd) -> anyhow::Result<()> {
        self.start_at(lab, host, lab.host(host).addr.into(), sshd)
    }

    /// [`SshLab::start`] in any lab, on `addr` (one of `host`'s).
    pub fn start_at(
        &self,
        lab: &impl LabNet,
        host: &str,
        addr: IpAddr,
        sshd: &Sshd,
    ) -> anyhow::Result<()> {
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").context("create /run/sshd")?;
        let host_key = format!("host-{host}");
        self.keygen(&host_key)?;
        let authorized = self.dir.join(format!("authorized-{host}"));
        let who = if sshd.authorize_client {
            "client"
        } else {
            "stranger"
        };
        std::fs::write(&authorized, format!("{}\n", self.public(who)?))?;
        let mut cfg = String::new();
        let _ = write!(
            cfg,
            "ListenAddress {listen}\nHostKey {key}\nAuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nLogLevel INFO\nMaxStartups 64\n",
            listen = SocketAddr::new(addr, sshd.port),
            key = self.dir.join(&host_key).display(),
            authorized = authorized.display(),
        );
        // Sessions get the test's own HOME: the login shell (bash sources
        // ~/.bashrc under sshd) must not run the machine's dotfiles. Only
        // the first SetEnv line counts, so one line.
        let home = self.dir.join("home");
        std::fs::create_dir_all(&home)?;
        let _ = write!(cfg, "SetEnv HOME={}", home.display());
        if let Some(path) = &sshd.path {
            let _ = write!(cfg, " PATH={path}");
        }
        cfg.push('\n');
        let cfg_path = self.dir.join(format!("sshd_config-{host}"));
        std::fs::write(&cfg_path, cfg)?;
        let cfg_arg = cfg_path.display().to_string();
        lab.spawn_logged(
            host,
            "/usr/sbin/sshd",
            &["-D", "-e", "-f", &cfg_arg],
            &self.log(host),
        )?;
        lab.wait_listening(host, sshd.port, Duration::from_secs(20))
            .with_context(|| std::fs::read_to_string(self.log(host)).unwrap_or_default())?;
        let key = if sshd.known_host_key {
            self.public(&host_key)?
        } else {
            self.public("impostor")?
        };
        let name = if sshd.port == 22 {
            addr.to_string()
        } else {
            format!("[{addr}]:{}", sshd.port)
        };
        let mut known = std::fs::read_to_string(self.dir.join("known_hosts"))?;
        let _ = writeln!(known, "{name} {key}");
        std::fs::write(self.dir.join("known_hosts"), known)?;
        Ok(())
    }

    /// Where host `host`'s sshd logs.
    pub fn log(&self, host: &str) -> PathBuf {
        self.dir.join(format!("sshd-{host}.log"))
    }
}

/// A process running inside one of a lab's hosts.
#[derive(Debug, Clone)]
pub struct LabProcess {
    /// Its pid.
    pub pid: u32,
    /// The lab host whose namespace it is in.
    pub host: String,
    /// Its command line, arguments joined by spaces.
    pub cmdline: String,
}

impl Lab {
    /// Every process inside one of this lab's host namespaces.
    pub fn processes(&self) -> Vec<LabProcess> {
        let mut inodes = Vec::new();
        for h in self.hosts() {
            if let Ok(m) = std::fs::metadata(format!("/run/netns/{}", h.netns)) {
                inodes.push(((m.dev(), m.ino()), h.name.clone()));
            }
        }
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            let Some((_, host)) = inodes.iter().find(|(k, _)| *k == (m.dev(), m.ino())) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            if cmdline.is_empty() {
                continue; // a zombie or a kernel thread
            }
            found.push(LabProcess {
                pid,
                host: host.clone(),
                cmdline,
            });
        }
        found
    }
}
