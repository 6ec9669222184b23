// Package stratatest starts real Strata nodes for tests: one node in local mode, or a cluster
// of nodes on loopback that a test can kill and restart. It needs the strata binary: STRATA_BIN
// names it, else the nearest target/debug/strata above the working directory (or under
// CARGO_TARGET_DIR) is used; a test without one fails and says how to build it.
package stratatest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyWait is how long a node may take to print its ready line.
const readyWait = 30 * time.Second

// Binary is the path of the strata binary, or a failed test.
func Binary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("STRATA_BIN"); bin != "" {
		return bin
	}
	var candidates []string
	if dir := os.Getenv("CARGO_TARGET_DIR"); dir != "" {
		candidates = append(candidates, filepath.Join(dir, "debug", "strata"))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, "target", "debug", "strata"))
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	for _, c := range candidates {
		if info, err := os.Stat(c); err == nil && !info.IsDir() {
			return c
		}
	}
	t.Fatalf("no strata binary: build it with `cargo build --workspace` or set STRATA_BIN (looked at %v)", candidates)
	return ""
}

// Node is one running `strata serve`.
type Node struct {
	t       testing.TB
	bin     string
	args    []string
	DataDir string
	// GRPC is the client address ("127.0.0.1:port").
	GRPC string
	// ID is the node id in a cluster (0 in local mode).
	ID  uint64
	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts a single node in local mode on a fresh data directory, stopped at the test's
// end; extra arguments pass to `strata serve`.
func Start(t testing.TB, extra ...string) *Node {
	t.Helper()
	n := &Node{t: t, bin: Binary(t), DataDir: filepath.Join(t.TempDir(), "data"), args: extra}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Kill)
	return n
}

func (n *Node) start() error {
	args := append([]string{"serve", "--client-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", n.DataDir}, n.args...)
	cmd := exec.Command(n.bin, args...)
	level := os.Getenv("STRATA_TEST_NODE_LOG")
	if level == "" {
		level = "warn,openraft=error,openraft::replication=off"
	}
	cmd.Env = append(os.Environ(), "STRATA_LOG="+level)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", n.bin, err)
	}
	ready := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if line := scanner.Text(); strings.HasPrefix(line, "strata ready:") {
				ready <- line
			}
		}
	}()
	select {
	case line := <-ready:
		for _, field := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(field, "grpc="); ok {
				n.GRPC = v
			}
		}
	case <-time.After(readyWait):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("node %d did not print its ready line within %v", n.ID, readyWait)
	}
	n.mu.Lock()
	n.cmd = cmd
	n.mu.Unlock()
	return nil
}

// Kill sends SIGKILL (no shutdown path runs, like a crash) and reaps the process.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd := n.cmd
	n.cmd = nil
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// Running reports whether the node's process was started and not killed.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Restart starts a killed node again over its data (the same address is not guaranteed for
// the client port: read GRPC again).
func (n *Node) Restart() {
	n.t.Helper()
	n.Kill()
	if err := n.start(); err != nil {
		n.t.Fatal(err)
	}
}

// Cluster is nodes 1..N on loopback, talking QUIC with mutual TLS, sharing a key that seals
// config secrets; auth and client TLS off.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
}

// StartCluster starts size nodes as the initial voters (forming again on new ports if one of
// the chosen peer ports was taken meanwhile) and waits for a leader.
func StartCluster(t testing.TB, size int, extra ...string) *Cluster {
	t.Helper()
	bin := Binary(t)
	root := t.TempDir()
	tls := filepath.Join(root, "tls")
	run(t, bin, "cert", "init", "--tls-dir", tls)
	secretKey := filepath.Join(root, "secret.key")
	run(t, bin, "cert", "secret-key", "--file", secretKey)
	for id := 1; id <= size; id++ {
		run(t, bin, "cert", "node", "--tls-dir", tls, "--node-id", fmt.Sprint(id), "--name", "127.0.0.1")
	}
	for attempt := 1; attempt <= 3; attempt++ {
		peers := make([]string, size)
		initial := make([]string, size)
		for i := range peers {
			peers[i] = fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
			initial[i] = fmt.Sprintf("%d=%s", i+1, peers[i])
		}
		c := &Cluster{t: t}
		var failed error
		for i := 0; i < size && failed == nil; i++ {
			n := &Node{
				t: t, bin: bin, ID: uint64(i + 1),
				DataDir: filepath.Join(root, fmt.Sprintf("attempt-%d", attempt), fmt.Sprintf("node-%d", i+1)),
				args: append([]string{"--node-id", fmt.Sprint(i + 1), "--peer-addr", peers[i], "--tls-dir", tls,
					"--initial-cluster", strings.Join(initial, ","), "--secret-key-file", secretKey,
					"--auth", "off", "--client-tls", "off"}, extra...),
			}
			if failed = n.start(); failed == nil {
				c.Nodes = append(c.Nodes, n)
			}
		}
		if failed == nil {
			t.Cleanup(func() {
				for _, n := range c.Nodes {
					n.Kill()
				}
			})
			c.WaitForLeader(30 * time.Second)
			return c
		}
		t.Logf("a node did not start (%v); forming the cluster again", failed)
		for _, n := range c.Nodes {
			n.Kill()
		}
	}
	t.Fatalf("could not start a %d-node cluster in 3 attempts", size)
	return nil
}

// Endpoints are the running nodes' client addresses.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n.GRPC)
		}
	}
	return out
}

// Node is node id (1-based).
func (c *Cluster) Node(id uint64) *Node { return c.Nodes[id-1] }

// WaitForLeader waits until every running node names the same running leader, and returns
// its id.
func (c *Cluster) WaitForLeader(timeout time.Duration) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if leader := c.agreedLeader(); leader != 0 {
			return leader
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the running nodes did not agree on a leader within %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) agreedLeader() uint64 {
	var agreed uint64
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		out, err := exec.Command(n.bin, "cluster", "status", "--json", "--endpoint", n.GRPC).Output()
		if err != nil {
			return 0
		}
		var status struct {
			LeaderID uint64 `json:"leader_id"`
		}
		if json.Unmarshal(out, &status) != nil || status.LeaderID == 0 {
			return 0
		}
		if agreed != 0 && agreed != status.LeaderID {
			return 0
		}
		agreed = status.LeaderID
	}
	if agreed == 0 || int(agreed) > len(c.Nodes) || !c.Node(agreed).Running() {
		return 0
	}
	return agreed
}

func run(t testing.TB, bin string, args ...string) {
	t.Helper()
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("strata %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// freeUDPPort is a loopback UDP port free a moment ago (the nodes' QUIC peer port).
func freeUDPPort(t testing.TB) int {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).Port
}

// StartSecure starts a single node as a cluster's nodes run: TLS on its client port (a
// certificate for 127.0.0.1 from a fresh CA) and auth on. It returns the node and the CA's
// PEM, which clients trust.
func StartSecure(t testing.TB, extra ...string) (*Node, []byte) {
	t.Helper()
	bin := Binary(t)
	tls := filepath.Join(t.TempDir(), "tls")
	run(t, bin, "cert", "init", "--tls-dir", tls)
	run(t, bin, "cert", "node", "--tls-dir", tls, "--node-id", "1", "--name", "127.0.0.1")
	ca, err := os.ReadFile(filepath.Join(tls, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--tls-dir", tls, "--peer-addr", "127.0.0.1:0", "--client-tls", "on", "--auth", "on"}, extra...)
	return Start(t, args...), ca
}

// RootCredentials are the root account's namespace, id and secret, which a node with auth
// writes to its data directory on its first start (waiting up to 30 s for them).
func (n *Node) RootCredentials() (namespace, id, secret string) {
	n.t.Helper()
	path := filepath.Join(n.DataDir, "root.credentials")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if text, err := os.ReadFile(path); err == nil {
			field := func(name string) string {
				for _, line := range strings.Split(string(text), "\n") {
					if v, ok := strings.CutPrefix(line, name+" = "); ok {
						return strings.Trim(v, `"`)
					}
				}
				n.t.Fatalf("no %s in %s", name, path)
				return ""
			}
			return field("namespace"), field("id"), field("secret")
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s did not appear within 30 s", path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
