// Package cluster reads and writes the cluster description, cluster.yaml: who the
// replicas and registered clients are (ids, public keys, libp2p peer IDs, addresses, key
// files) and the protocol settings every replica must share. Everything a node needs to
// join the cluster, and nothing it may take from anywhere else.
//
// Every error names the file and the field at fault, e.g.
//
//	cluster.yaml: replicas[2].address: "127.0.0.1:7002" is not a multiaddr
package cluster

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"gopkg.in/yaml.v3"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/network"
	"github.com/pbftkit/pbft/pbft"
)

// File is cluster.yaml as written: plain values, checked by Load.
type File struct {
	// Cluster names the cluster; every signature is bound to it, so messages of one
	// cluster never verify in another.
	Cluster  string   `yaml:"cluster"`
	Scheme   string   `yaml:"scheme"`
	Replicas []Node   `yaml:"replicas"`
	Clients  []Node   `yaml:"clients"`
	Protocol Protocol `yaml:"protocol"`
}

// Node is one replica or registered client.
type Node struct {
	ID        uint32 `yaml:"id"`
	PublicKey string `yaml:"public_key"`
	PeerID    string `yaml:"peer_id"`
	// Address is where a replica listens (a multiaddr); clients have none.
	Address string `yaml:"address,omitempty"`
	// KeyFile is the node's private key, relative to the directory of cluster.yaml.
	// Only the node itself needs it to exist.
	KeyFile string `yaml:"key_file,omitempty"`
}

// Protocol holds the settings every replica must agree on.
type Protocol struct {
	BatchSize          int    `yaml:"batch_size"`
	MaxBatchBytes      int    `yaml:"max_batch_bytes"`
	CheckpointInterval uint64 `yaml:"checkpoint_interval"`
	LogWindow          uint64 `yaml:"log_window"`
	MaxInFlightBatches int    `yaml:"max_in_flight_batches"`
	ReplyWindow        int    `yaml:"reply_window"`
	// Tick is the length of one logical tick; the timeouts below count ticks.
	Tick            string `yaml:"tick"`
	RetransmitTicks int    `yaml:"retransmit_ticks"`
	ViewChangeTicks int    `yaml:"view_change_ticks"`
	StateChunkBytes int    `yaml:"state_chunk_bytes"`
	MaxFrameBytes   int    `yaml:"max_frame_bytes"`
}

// DefaultProtocol is what `pbft init` writes: the core's defaults with a 10 ms tick
// (a view change after 1 s without progress, retransmission every 200 ms).
func DefaultProtocol() Protocol {
	d := pbft.DefaultConfig(0, 4, nil)
	return Protocol{
		BatchSize: d.MaxBatchRequests, MaxBatchBytes: d.MaxBatchBytes,
		CheckpointInterval: d.CheckpointInterval, LogWindow: d.LogWindow,
		MaxInFlightBatches: d.MaxInFlightBatches, ReplyWindow: d.ReplyWindow,
		Tick: "10ms", RetransmitTicks: d.RetransmitTicks, ViewChangeTicks: d.ViewChangeTicks,
		StateChunkBytes: d.StateChunkBytes, MaxFrameBytes: 4 << 20,
	}
}

// Member is a checked Node.
type Member struct {
	ID      uint32
	Public  *crypto.PublicKey
	PeerID  peer.ID
	Addr    multiaddr.Multiaddr // nil for clients
	KeyFile string              // absolute, or "" when not given
	field   string              // "replicas[2]", for errors
}

// Cluster is a loaded, checked cluster.yaml.
type Cluster struct {
	Path     string // the file it came from
	Name     string
	Scheme   *crypto.Scheme
	Replicas []Member // index = replica id
	Clients  []Member
	Protocol Protocol
	Tick     time.Duration
	F        int
}

// Load reads and checks path. It rejects unknown fields, n < 3f+1, duplicate or
// missing ids, bad keys, peer IDs and addresses, and protocol settings out of range.
func Load(path string) (*Cluster, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %s", path, yamlError(err))
	}
	return Check(path, &f)
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// yamlError turns yaml.v3's messages into ones that name the field as the file does.
func yamlError(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = strings.TrimPrefix(s, "unmarshal errors:\n  ")
	return unknownField.ReplaceAllString(s, `unknown field "$1"`)
}

// Check validates f, read from path (relative key files resolve against its directory).
func Check(path string, f *File) (*Cluster, error) {
	c := &Cluster{Path: path, Name: f.Cluster, Protocol: f.Protocol}
	fail := func(field, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %s", path, field, fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(f.Cluster) == "" {
		return nil, fail("cluster", "missing: name the cluster (signatures are bound to it)")
	}
	scheme, err := crypto.SchemeByName(f.Scheme)
	if err != nil {
		return nil, fail("scheme", "%v", err)
	}
	c.Scheme = scheme
	n := len(f.Replicas)
	q, err := pbft.NewQuorum(n)
	if err != nil || n < 4 {
		return nil, fail("replicas", "%d replicas; PBFT needs n >= 3f+1 with f >= 1, so at least 4", n)
	}
	c.F = q.F
	dir := filepath.Dir(path)
	seenPeer := map[peer.ID]string{}
	c.Replicas = make([]Member, n)
	for i := range f.Replicas {
		field := fmt.Sprintf("replicas[%d]", i)
		m, err := member(fail, field, &f.Replicas[i], scheme, dir, true)
		if err != nil {
			return nil, err
		}
		if m.ID >= uint32(n) {
			return nil, fail(field+".id", "%d is out of range: replica ids are 0..%d", m.ID, n-1)
		}
		if c.Replicas[m.ID].Public != nil {
			return nil, fail(field+".id", "duplicate id %d (also %s)", m.ID, c.Replicas[m.ID].field)
		}
		if prev, dup := seenPeer[m.PeerID]; dup {
			return nil, fail(field+".peer_id", "duplicate peer id (also %s)", prev)
		}
		seenPeer[m.PeerID] = field
		c.Replicas[m.ID] = *m
	}
	seenClient := map[uint32]string{}
	for i := range f.Clients {
		field := fmt.Sprintf("clients[%d]", i)
		m, err := member(fail, field, &f.Clients[i], scheme, dir, false)
		if err != nil {
			return nil, err
		}
		if m.ID == 0 {
			return nil, fail(field+".id", "client ids start at 1")
		}
		if prev, dup := seenClient[m.ID]; dup {
			return nil, fail(field+".id", "duplicate id %d (also %s)", m.ID, prev)
		}
		seenClient[m.ID] = field
		if prev, dup := seenPeer[m.PeerID]; dup {
			return nil, fail(field+".peer_id", "duplicate peer id (also %s)", prev)
		}
		seenPeer[m.PeerID] = field
		c.Clients = append(c.Clients, *m)
	}
	tick, err := time.ParseDuration(f.Protocol.Tick)
	if err != nil || tick <= 0 {
		return nil, fail("protocol.tick", "%q is not a positive duration (e.g. 10ms)", f.Protocol.Tick)
	}
	c.Tick = tick
	if f.Protocol.MaxFrameBytes < 1<<16 {
		return nil, fail("protocol.max_frame_bytes", "%d is below the 64 KiB minimum", f.Protocol.MaxFrameBytes)
	}
	// The signer is the node's own business; the settings are checked with a stand-in.
	cfg := c.PBFTConfig(0, &pbft.KeySigner{})
	if err := cfg.Validate(); err != nil {
		return nil, fail("protocol", "%v", err)
	}
	if need, what := WorstCaseFrame(scheme, n, f.Protocol); need > f.Protocol.MaxFrameBytes {
		return nil, fail("protocol.max_frame_bytes", "%d bytes cannot carry %s (up to %d bytes with %s and n=%d); raise it to at least %d",
			f.Protocol.MaxFrameBytes, what, need, scheme.Name(), n, need)
	}
	return c, nil
}

// signedOverhead bounds what a signed message adds to its signature: type, sender,
// a body of a view, a seq and a digest, and CBOR framing.
const signedOverhead = 96

// WorstCaseFrame is the largest frame a cluster of n replicas with these settings may
// have to send, and which message it is: a NEW-VIEW carrying 2f+1 VIEW-CHANGEs, each
// with a stable proof and a prepared certificate for every seq of the log window; a
// PRE-PREPARE with a full batch; or a STATE-RESPONSE chunk with its proof. With the
// post-quantum schemes' 2.4 KB signatures a NEW-VIEW is the big one.
func WorstCaseFrame(s *crypto.Scheme, n int, p Protocol) (int, string) {
	sig := s.SignatureSize() + signedOverhead
	quorum, _ := pbft.NewQuorum(n)
	q := quorum.Strong()
	cert := (1 + quorum.Prepared()) * sig
	// A checkpoint proof holds every matching CHECKPOINT its replica had, up to n.
	vc := int(p.LogWindow)*cert + n*sig + sig
	newView := q*vc + int(p.LogWindow)*sig + sig
	prePrepare := p.MaxBatchBytes + p.BatchSize*sig + sig
	state := p.StateChunkBytes + n*sig + sig
	best, what := newView, "a NEW-VIEW"
	if prePrepare > best {
		best, what = prePrepare, "a PRE-PREPARE with a full batch"
	}
	if state > best {
		best, what = state, "a state chunk"
	}
	return best + 4<<10, what
}

func member(fail func(string, string, ...any) error, field string, nd *Node, scheme *crypto.Scheme, dir string, replica bool) (*Member, error) {
	m := &Member{ID: nd.ID, field: field}
	pk, err := crypto.ParsePublicKeyString(nd.PublicKey)
	if err != nil {
		return nil, fail(field+".public_key", "%v", err)
	}
	if pk.Scheme().Name() != scheme.Name() {
		return nil, fail(field+".public_key", "a %s key in a %s cluster", pk.Scheme().Name(), scheme.Name())
	}
	m.Public = pk
	id, err := peer.Decode(nd.PeerID)
	if err != nil {
		return nil, fail(field+".peer_id", "%q: %v", nd.PeerID, err)
	}
	m.PeerID = id
	if want, err := network.PeerIDFromPublicKey(pk); err == nil && want != id {
		return nil, fail(field+".peer_id", "%s does not match public_key (its peer id is %s)", id, want)
	}
	switch {
	case replica && nd.Address == "":
		return nil, fail(field+".address", "missing: a replica needs a listen address such as /ip4/127.0.0.1/tcp/7000")
	case nd.Address != "":
		a, err := multiaddr.NewMultiaddr(nd.Address)
		if err != nil {
			return nil, fail(field+".address", "%q is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/7000): %v", nd.Address, err)
		}
		m.Addr = a
	}
	if nd.KeyFile != "" {
		m.KeyFile = nd.KeyFile
		if !filepath.IsAbs(m.KeyFile) {
			m.KeyFile = filepath.Join(dir, m.KeyFile)
		}
	}
	return m, nil
}

// UsesQUIC reports whether some replica listens on QUIC: its nodes then need the QUIC
// transport besides TCP.
func (c *Cluster) UsesQUIC() bool {
	for _, r := range c.Replicas {
		if _, err := r.Addr.ValueForProtocol(multiaddr.P_QUIC_V1); err == nil {
			return true
		}
	}
	return false
}

// PBFTConfig is the core's configuration for replica id, from the protocol settings.
func (c *Cluster) PBFTConfig(id pbft.ReplicaID, s pbft.Signer) pbft.Config {
	cfg := pbft.DefaultConfig(id, len(c.Replicas), s)
	p := c.Protocol
	cfg.MaxBatchRequests, cfg.MaxBatchBytes = p.BatchSize, p.MaxBatchBytes
	cfg.CheckpointInterval, cfg.LogWindow = p.CheckpointInterval, p.LogWindow
	cfg.MaxInFlightBatches, cfg.ReplyWindow = p.MaxInFlightBatches, p.ReplyWindow
	cfg.RetransmitTicks, cfg.ViewChangeTicks = p.RetransmitTicks, p.ViewChangeTicks
	if p.StateChunkBytes > 0 {
		cfg.StateChunkBytes = p.StateChunkBytes
	}
	return cfg
}

// KeyRing verifies the signatures of the cluster's replicas and clients.
func (c *Cluster) KeyRing() *pbft.PublicKeyRing {
	ring := &pbft.PublicKeyRing{Cluster: c.Name, Clients: make(map[pbft.ClientID]*crypto.PublicKey, len(c.Clients))}
	for _, r := range c.Replicas {
		ring.Replicas = append(ring.Replicas, r.Public)
	}
	for _, cl := range c.Clients {
		ring.Clients[pbft.ClientID(cl.ID)] = cl.Public
	}
	return ring
}

// Limits are the decoding limits matching the protocol settings: a NEW-VIEW of n
// replicas over the whole log window must decode.
func (c *Cluster) Limits() pbft.Limits {
	lim := pbft.DefaultLimits()
	lim.MaxMessageBytes = max(lim.MaxMessageBytes, c.Protocol.MaxFrameBytes)
	lim.MaxBatchRequests = max(lim.MaxBatchRequests, c.Protocol.BatchSize)
	lim.MaxReplicas = max(lim.MaxReplicas, len(c.Replicas))
	lim.MaxPrepared = max(lim.MaxPrepared, int(c.Protocol.LogWindow))
	lim.MaxStateBytes = max(lim.MaxStateBytes, c.Protocol.StateChunkBytes)
	return lim
}

// Client returns the registered client with id.
func (c *Cluster) Client(id uint32) (*Member, error) {
	for i := range c.Clients {
		if c.Clients[i].ID == id {
			return &c.Clients[i], nil
		}
	}
	return nil, fmt.Errorf("%s: clients: no client with id %d", c.Path, id)
}

// Replica returns replica id.
func (c *Cluster) Replica(id uint32) (*Member, error) {
	if uint64(id) >= uint64(len(c.Replicas)) {
		return nil, fmt.Errorf("%s: replicas: no replica with id %d (ids are 0..%d)", c.Path, id, len(c.Replicas)-1)
	}
	return &c.Replicas[id], nil
}

// LoadKey reads m's private key file and checks that it is the key the cluster lists
// for m: its public key and its peer ID.
func (c *Cluster) LoadKey(m *Member) (*crypto.PrivateKey, error) {
	if m.KeyFile == "" {
		return nil, fmt.Errorf("%s: %s.key_file: missing: this node's private key file", c.Path, m.field)
	}
	k, err := crypto.ReadPrivateKeyFileScheme(m.KeyFile, c.Scheme.Name())
	if err != nil {
		return nil, fmt.Errorf("%s: %s.key_file: %w", c.Path, m.field, err)
	}
	if !k.Public().Equal(m.Public) {
		return nil, fmt.Errorf("%s: %s.public_key: does not match the private key in %s", c.Path, m.field, m.KeyFile)
	}
	_, id, err := network.Identity(k)
	if err != nil {
		return nil, fmt.Errorf("%s: %s.key_file: %w", c.Path, m.field, err)
	}
	if id != m.PeerID {
		return nil, fmt.Errorf("%s: %s.peer_id: %s does not match the key in %s (its peer id is %s)", c.Path, m.field, m.PeerID, m.KeyFile, id)
	}
	return k, nil
}

// Write stores f at path (0644), with a header saying what wrote it.
func Write(path string, f *File) error {
	var b bytes.Buffer
	b.WriteString("# PBFT cluster description, written by `pbft init`. Every replica and client\n# of the cluster must use the same file.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("cluster config: %w", err)
	}
	return nil
}
