//! Real network faults: each node in a network namespace of its own, joined by veth pairs to a
//! bridge this suite creates (and removes when it is dropped). The suite's clients reach the
//! nodes through the bridge's address; the nodes reach each other through the bridge too.
//! Faults are nftables rules in the receiving node's namespace, so they drop packets silently,
//! as a broken link would: a cut from A to B is "B drops what comes from A". Loss is the same
//! rule with a random match. Delay needs the kernel's netem qdisc: it is used when the kernel
//! has it and said to be missing otherwise. Nothing leaves the namespaces and the bridge.
//! Without root the same faults come from a UDP proxy instead (`proxy.rs`).

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{bail, Context};

/// Where the network faults are made: in the kernel between namespaces (root), or in a UDP
/// proxy between nodes on 127.0.0.1 (`proxy.rs`, no privileges).
pub enum Network {
    Namespaces(Namespaces),
    Proxy(crate::proxy::Proxy),
}

impl Network {
    /// Node `to` no longer receives what node `from` sends.
    pub fn cut(&self, from: u64, to: u64) -> anyhow::Result<()> {
        match self {
            Network::Namespaces(net) => net.cut(from, to),
            Network::Proxy(proxy) => proxy.cut(from, to),
        }
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn isolate(&self, side: &BTreeSet<u64>) -> anyhow::Result<()> {
        let nodes = match self {
            Network::Namespaces(net) => &net.nodes,
            Network::Proxy(proxy) => &proxy.nodes,
        };
        for &a in side {
            for &b in nodes.iter().filter(|b| !side.contains(b)) {
                self.cut(a, b)?;
                self.cut(b, a)?;
            }
        }
        Ok(())
    }

    /// Node `id` loses `percent` % of its peers' packets and, where delay can be made, gets
    /// them about `delay_ms` late.
    pub fn degrade(&self, id: u64, percent: u32, delay_ms: u32) -> anyhow::Result<()> {
        match self {
            Network::Namespaces(net) => net.degrade(id, percent, delay_ms),
            Network::Proxy(proxy) => proxy.degrade(id, percent, delay_ms),
        }
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        match self {
            Network::Namespaces(net) => net.heal(),
            Network::Proxy(proxy) => proxy.heal(),
        }
    }
}

pub struct Namespaces {
    tag: String,
    /// The first three octets of the subnet, e.g. `10.213.7`.
    subnet: String,
    pub(crate) nodes: Vec<u64>,
    /// Whether the kernel has netem (delay) as well as nftables (cuts, loss).
    pub has_netem: bool,
}

fn sh(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Whether this process can make network namespaces with nftables rules in them (root, and
/// `ip` and `nft` installed). Says why not otherwise.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    Ok(())
}

impl Namespaces {
    /// Creates the bridge and one namespace per node.
    pub fn create(nodes: u64) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let tag = tag(pid);
        let subnet = format!("10.{}.{}", 200 + (pid >> 8) % 50, pid & 0xff);
        let mut net = Self {
            tag,
            subnet,
            nodes: (1..=nodes).collect(),
            has_netem: false,
        };
        net.remove(); // leftovers of an earlier process with the same id
        crate::guard::namespaces(Some((net.tag.clone(), nodes)));
        let bridge = net.bridge();
        sh("ip", &["link", "add", &bridge, "type", "bridge"])?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}.254/24", net.subnet),
                "dev",
                &bridge,
            ],
        )?;
        sh("ip", &["link", "set", &bridge, "up"])?;
        for id in 1..=nodes {
            let (ns, veth) = (net.namespace(id), veth_name(&net.tag, id));
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            sh("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", net.address(id)),
                    "dev",
                    "eth0",
                ],
            )?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            sh(
                "ip",
                &[
                    "netns", "exec", &ns, "nft", "add", "table", "inet", "jepsen",
                ],
            )?;
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    "jepsen",
                    "input",
                    "{ type filter hook input priority 0; policy accept; }",
                ],
            )?;
        }
        let probe = [
            "-n",
            &net.namespace(1),
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
        ];
        net.has_netem = sh("tc", &[&probe[..], &["netem", "delay", "1ms"]].concat()).is_ok();
        if net.has_netem {
            sh(
                "tc",
                &[
                    "-n",
                    &net.namespace(1),
                    "qdisc",
                    "del",
                    "dev",
                    "eth0",
                    "root",
                ],
            )?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        bridge_name(&self.tag)
    }

    pub fn namespace(&self, id: u64) -> String {
        namespace_name(&self.tag, id)
    }

    /// Node `id`'s address on the bridge.
    pub fn address(&self, id: u64) -> String {
        format!("{}.{id}", self.subnet)
    }

    fn nft(&self, id: u64, rule: &str) -> anyhow::Result<()> {
        let ns = self.namespace(id);
        let mut args = vec!["netns", "exec", &ns, "nft"];
        args.extend(rule.split(' '));
        sh("ip", &args)
    }

    /// Node `to` no longer receives what node `from` sends.
    pub fn cut(&self, from: u64, to: u64) -> anyhow::Result<()> {
        let rule = format!(
            "add rule inet jepsen input ip saddr {} drop",
            self.address(from)
        );
        self.nft(to, &rule)
    }

    /// Node `id` drops `percent` % of what the other nodes send it (not the clients' traffic),
    /// and delays what it sends by `delay_ms` when the kernel has netem.
    pub fn degrade(&self, id: u64, percent: u32, delay_ms: u32) -> anyhow::Result<()> {
        let rule = format!(
            "add rule inet jepsen input ip saddr {}.0/24 ip saddr != {}.254 numgen random mod 100 < {percent} drop",
            self.subnet, self.subnet
        );
        self.nft(id, &rule)?;
        if self.has_netem {
            let delay = format!("{delay_ms}ms");
            let jitter = format!("{}ms", delay_ms / 2);
            let ns = self.namespace(id);
            let args = [
                "-n", &ns, "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
            ];
            sh("tc", &[&args[..], &[&delay, &jitter]].concat())?;
        }
        Ok(())
    }

    /// Removes every fault.
    pub fn heal(&self) -> anyhow::Result<()> {
        for &id in &self.nodes {
            self.nft(id, "flush chain inet jepsen input")?;
            if self.has_netem {
                let ns = self.namespace(id);
                // Fails when there is no netem qdisc on the link, which is fine.
                let _ = sh("tc", &["-n", &ns, "qdisc", "del", "dev", "eth0", "root"]);
            }
        }
        Ok(())
    }

    fn remove(&self) {
        remove_namespaces(&self.tag, self.nodes.len() as u64);
    }
}

/// The most nodes a run has (`--nodes`).
pub const MAX_NODES: u64 = 5;

/// The names of run `tag`'s (`sj<pid>`) bridge, namespaces and veths; `pid_in` reads them.
fn bridge_name(tag: &str) -> String {
    format!("{tag}b")
}

fn namespace_name(tag: &str, id: u64) -> String {
    format!("{tag}n{id}")
}

fn veth_name(tag: &str, id: u64) -> String {
    format!("{tag}v{id}")
}

pub fn tag(pid: u32) -> String {
    format!("sj{pid}")
}

/// The pid of the run that named one of the suite's bridges (`sj<pid>b`), namespaces
/// (`sj<pid>n<id>`) or veths (`sj<pid>v<id>`, `@peer` after it as `ip link` prints it).
pub fn pid_in(name: &str) -> Option<u32> {
    let name = name.split('@').next()?;
    let digits = name.strip_prefix("sj")?;
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    let (pid, rest) = digits.split_at(end);
    let suffix_ok = match rest.chars().next()? {
        'b' => rest.len() == 1,
        'n' | 'v' => rest.len() > 1 && rest[1..].chars().all(|c| c.is_ascii_digit()),
        _ => false,
    };
    suffix_ok.then(|| pid.parse().ok()).flatten()
}

/// Removes the namespaces (killing what still runs in them), the veths and the bridge of run
/// `tag`. Deleting a namespace deletes its end of a veth pair and with it the other end, but
/// only once nothing holds the namespace, so the root end is deleted too.
pub fn remove_namespaces(tag: &str, nodes: u64) {
    for id in 1..=nodes {
        let ns = namespace_name(tag, id);
        if let Ok(output) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = sh("ip", &["netns", "del", &ns]);
        // Gone with the namespace, unless something still holds the namespace.
        let _ = sh("ip", &["link", "del", &veth_name(tag, id)]);
    }
    let _ = sh("ip", &["link", "del", &bridge_name(tag)]);
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove();
        crate::guard::namespaces(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_suites_links_and_namespaces_give_their_run() {
        let run = tag(4_194_303);
        assert_eq!(pid_in(&bridge_name(&run)), Some(4_194_303));
        assert_eq!(pid_in(&namespace_name(&run, 2)), Some(4_194_303));
        assert_eq!(
            pid_in(&format!("{}@if3", veth_name(&run, 12))),
            Some(4_194_303)
        );
        for other in [
            "sj", "sjb", "sj12", "sj12x1", "sj12n", "sj12bb", "sj12n1x", "eth0", "sjx1b",
        ] {
            assert_eq!(pid_in(other), None, "{other}");
        }
    }
}
