package cluster

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/network"
)

// GenerateOptions describe a new cluster for Generate.
type GenerateOptions struct {
	Name     string // default "pbft"
	Replicas int
	Clients  int
	Host     string // replicas listen on Host:BasePort+i; default 127.0.0.1
	BasePort int    // default 7000
	Scheme   string // default Ed25519
	Protocol Protocol
	// Addrs, when set, are the replicas' listen multiaddrs instead of Host:BasePort+i.
	Addrs []string
	// QUIC makes the replicas listen on QUIC (UDP) instead of TCP.
	QUIC bool
}

// FileName is the name Generate gives the cluster description.
const FileName = "cluster.yaml"

// Generate creates, in dir, a fresh private key for every replica and client (files
// mode 0600) and the cluster.yaml that lists them; it returns the path of cluster.yaml
// and refuses to overwrite an existing one.
func Generate(dir string, o GenerateOptions) (string, error) {
	if o.Name == "" {
		o.Name = "pbft"
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.BasePort == 0 {
		o.BasePort = 7000
	}
	if o.Scheme == "" {
		o.Scheme = crypto.DefaultScheme
	}
	if o.Protocol == (Protocol{}) {
		o.Protocol = DefaultProtocol()
	}
	ip := net.ParseIP(o.Host)
	if ip == nil {
		return "", fmt.Errorf("--host: %q is not an IP address", o.Host)
	}
	if o.BasePort < 1 || o.BasePort+o.Replicas > 65535 {
		return "", fmt.Errorf("--base-port: %d leaves no room for %d replicas below 65536", o.BasePort, o.Replicas)
	}
	scheme, err := crypto.SchemeByName(o.Scheme)
	if err != nil {
		return "", fmt.Errorf("--scheme: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("--out: %w", err)
	}
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); err == nil {
		return "", fmt.Errorf("--out: %s already exists; remove it or choose another directory", path)
	}
	ipProto := "ip4"
	if ip.To4() == nil {
		ipProto = "ip6"
	}
	if need, _ := WorstCaseFrame(scheme, o.Replicas, o.Protocol); need > o.Protocol.MaxFrameBytes {
		// Post-quantum signatures make certificates big: size frames to carry them.
		o.Protocol.MaxFrameBytes = (need + need/4 + 1<<20 - 1) &^ (1<<20 - 1)
	}
	f := &File{Cluster: o.Name, Scheme: scheme.Name(), Protocol: o.Protocol}
	node := func(kind string, id uint32) (Node, error) {
		k, err := scheme.GenerateKey(rand.Reader)
		if err != nil {
			return Node{}, err
		}
		name := kind + "-" + strconv.Itoa(int(id)) + ".key"
		if err := crypto.WritePrivateKeyFile(filepath.Join(dir, name), k); err != nil {
			return Node{}, err
		}
		_, pid, err := network.Identity(k)
		if err != nil {
			return Node{}, err
		}
		return Node{ID: id, PublicKey: k.Public().String(), PeerID: pid.String(), KeyFile: name}, nil
	}
	for i := 0; i < o.Replicas; i++ {
		nd, err := node("replica", uint32(i))
		if err != nil {
			return "", err
		}
		nd.Address = fmt.Sprintf("/%s/%s/tcp/%d", ipProto, o.Host, o.BasePort+i)
		if o.QUIC {
			nd.Address = fmt.Sprintf("/%s/%s/udp/%d/quic-v1", ipProto, o.Host, o.BasePort+i)
		}
		if i < len(o.Addrs) {
			nd.Address = o.Addrs[i]
		}
		f.Replicas = append(f.Replicas, nd)
	}
	for j := 1; j <= o.Clients; j++ {
		nd, err := node("client", uint32(j))
		if err != nil {
			return "", err
		}
		f.Clients = append(f.Clients, nd)
	}
	if _, err := Check(path, f); err != nil {
		return "", err
	}
	return path, Write(path, f)
}
