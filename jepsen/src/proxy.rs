//! Network faults without root: a UDP proxy on 127.0.0.1 between the nodes' QUIC endpoints.
//! Node i binds its peer socket at `real[i]` but is known to the cluster (the initial cluster
//! and the membership) at `front[i]`, a proxy socket. A packet from node j to `front[i]` is
//! relayed to `real[i]` from a relay socket kept for the pair (j, i), and what node i answers
//! to that relay goes back to node j from `front[i]`, so each direction of each pair passes
//! one place where it can be dropped, thinned or delayed. The nodes' identities are checked by
//! mutual TLS on node names, so the relay addresses change nothing for them. Clients talk to
//! the nodes directly (gRPC over TCP), as in the namespace mode.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::UdpSocket;

#[derive(Default)]
struct Faults {
    /// Directions (from, to) whose packets are dropped.
    cut: HashSet<(u64, u64)>,
    /// Per receiving node: percent of its peers' packets dropped, and the delay (ms) added.
    degraded: HashMap<u64, (u32, u32)>,
    /// A cheap generator for the loss decisions (xorshift).
    random: u64,
}

impl Faults {
    /// Whether a packet from `from` to `to` goes through, and after what delay.
    fn pass(&mut self, from: u64, to: u64) -> Option<Duration> {
        if self.cut.contains(&(from, to)) {
            return None;
        }
        let Some(&(percent, delay_ms)) = self.degraded.get(&to) else {
            return Some(Duration::ZERO);
        };
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        if self.random % 100 < u64::from(percent) {
            return None;
        }
        Some(Duration::from_millis(u64::from(delay_ms)))
    }
}

pub struct Proxy {
    pub(crate) nodes: Vec<u64>,
    /// Where each node is known to the others (the proxy's sockets).
    pub front: HashMap<u64, SocketAddr>,
    /// Where each node binds its peer socket.
    pub real: HashMap<u64, SocketAddr>,
    faults: Arc<Mutex<Faults>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Sends `packet` from `socket` to `to` after `delay` (at once when zero).
fn send_later(socket: Arc<UdpSocket>, packet: Vec<u8>, to: SocketAddr, delay: Duration) {
    if delay.is_zero() {
        // A full socket buffer drops the packet, as a congested link would.
        let _ = socket.try_send_to(&packet, to);
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = socket.send_to(&packet, to).await;
        });
    }
}

impl Proxy {
    /// Binds a front socket and picks a real address for each of `nodes` nodes, and starts
    /// relaying. Must be called inside the tokio runtime.
    pub async fn start(nodes: u64) -> anyhow::Result<Self> {
        let faults = Arc::new(Mutex::new(Faults {
            random: 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id()),
            ..Faults::default()
        }));
        let mut proxy = Proxy {
            nodes: (1..=nodes).collect(),
            front: HashMap::new(),
            real: HashMap::new(),
            faults,
            tasks: Vec::new(),
        };
        let mut fronts = HashMap::new();
        for id in 1..=nodes {
            let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            proxy.front.insert(id, front.local_addr()?);
            // The node binds this a moment later; a clash shows as a node that fails to start.
            let real = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
            proxy.real.insert(id, real);
            fronts.insert(id, front);
        }
        let by_real: Arc<HashMap<SocketAddr, u64>> =
            Arc::new(proxy.real.iter().map(|(id, addr)| (*addr, *id)).collect());
        for (&to, front) in &fronts {
            let task = tokio::spawn(relay_front(
                to,
                front.clone(),
                proxy.real[&to],
                by_real.clone(),
                proxy.faults.clone(),
            ));
            proxy.tasks.push(task);
        }
        Ok(proxy)
    }

    pub fn cut(&self, from: u64, to: u64) -> anyhow::Result<()> {
        self.faults.lock().unwrap().cut.insert((from, to));
        Ok(())
    }

    /// Node `id` loses `percent` % of its peers' packets and gets them `delay_ms` late.
    pub fn degrade(&self, id: u64, percent: u32, delay_ms: u32) -> anyhow::Result<()> {
        self.faults
            .lock()
            .unwrap()
            .degraded
            .insert(id, (percent, delay_ms));
        Ok(())
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        let mut faults = self.faults.lock().unwrap();
        faults.cut.clear();
        faults.degraded.clear();
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Relays what arrives at node `to`'s front socket: each sender gets a relay socket of its
/// own towards `to`'s real address, whose answers go back to the sender from the front.
async fn relay_front(
    to: u64,
    front: Arc<UdpSocket>,
    real: SocketAddr,
    by_real: Arc<HashMap<SocketAddr, u64>>,
    faults: Arc<Mutex<Faults>>,
) {
    let mut relays: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buffer = vec![0u8; 65_536];
    loop {
        let Ok((len, sender)) = front.recv_from(&mut buffer).await else {
            continue;
        };
        // Only the nodes' own sockets are relayed; their ids name the direction.
        let Some(&from) = by_real.get(&sender) else {
            continue;
        };
        let relay = match relays.get(&sender) {
            Some(relay) => relay.clone(),
            None => match open_relay(from, to, sender, front.clone(), faults.clone()).await {
                Ok(relay) => {
                    relays.insert(sender, relay.clone());
                    relay
                }
                Err(error) => {
                    eprintln!("strata-jepsen proxy: no relay for {from} -> {to}: {error:#}");
                    continue;
                }
            },
        };
        let verdict = faults.lock().unwrap().pass(from, to);
        if let Some(delay) = verdict {
            send_later(relay, buffer[..len].to_vec(), real, delay);
        }
    }
}

/// The relay socket for packets from node `from` (at `sender`) to node `to`, and the task that
/// carries `to`'s answers back to `sender` through `front`.
async fn open_relay(
    from: u64,
    to: u64,
    sender: SocketAddr,
    front: Arc<UdpSocket>,
    faults: Arc<Mutex<Faults>>,
) -> anyhow::Result<Arc<UdpSocket>> {
    let relay = Arc::new(
        UdpSocket::bind("127.0.0.1:0")
            .await
            .context("binding a relay socket")?,
    );
    let answers = relay.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, _)) = answers.recv_from(&mut buffer).await {
            let verdict = faults.lock().unwrap().pass(to, from);
            if let Some(delay) = verdict {
                send_later(front.clone(), buffer[..len].to_vec(), sender, delay);
            }
        }
    });
    Ok(relay)
}
