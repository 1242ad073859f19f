package pbft

import "fmt"

// Config is one replica's protocol configuration. Every replica of a cluster must use
// the same values except ID and Signer.
type Config struct {
	ID ReplicaID
	N  int // replicas, n >= 3f+1

	// CheckpointInterval is K: a checkpoint is taken after every K sequence numbers.
	CheckpointInterval uint64
	// LogWindow is L: sequence numbers n with h < n <= h+L are accepted, h being the last
	// stable checkpoint. A multiple of K, at least K.
	LogWindow uint64
	// MaxBatchRequests and MaxBatchBytes bound one pre-prepare's batch.
	MaxBatchRequests int
	MaxBatchBytes    int
	// MaxInFlightBatches bounds the sequence numbers a primary has proposed but not yet
	// executed; requests arriving meanwhile wait and form larger batches.
	MaxInFlightBatches int
	// ReplyWindow is how many executed timestamps per client the client table remembers
	// (with their replies): a client may have this many requests in flight at once.
	ReplyWindow int
	// RetransmitTicks is the period of retransmission to replicas that seem to lag.
	RetransmitTicks int
	// StateChunkBytes is the size of one chunk of checkpoint state in state transfer;
	// MaxStateBytes bounds a whole checkpoint state a replica accepts from a peer.
	StateChunkBytes int
	MaxStateBytes   int
	// ViewChangeTicks is the initial view-change timeout: how long a backup waits for a
	// request it holds to execute (and, changing view, for the NEW-VIEW) before moving
	// to the next view. It doubles while view changes make no progress.
	ViewChangeTicks int

	// Signer signs this replica's messages.
	Signer Signer
}

// DefaultConfig returns production defaults for replica id of an n-replica cluster.
func DefaultConfig(id ReplicaID, n int, s Signer) Config {
	return Config{
		ID: id, N: n,
		CheckpointInterval: 64,
		LogWindow:          256,
		MaxBatchRequests:   256,
		MaxBatchBytes:      1 << 20,
		MaxInFlightBatches: 4,
		ReplyWindow:        64,
		RetransmitTicks:    20,
		ViewChangeTicks:    100,
		StateChunkBytes:    1 << 20,
		MaxStateBytes:      1 << 30,
		Signer:             s,
	}
}

// Validate reports the first field that is out of range.
func (c *Config) Validate() error {
	if _, err := NewQuorum(c.N); err != nil {
		return err
	}
	if c.N > 1 && c.N < 4 {
		return fmt.Errorf("replicas: n=%d tolerates no fault (need n >= 3f+1 with f >= 1, or n = 1)", c.N)
	}
	switch {
	case int(c.ID) >= c.N:
		return fmt.Errorf("id: %d is not a replica of %d", c.ID, c.N)
	case c.CheckpointInterval == 0:
		return fmt.Errorf("checkpoint interval: must be positive")
	case c.LogWindow < c.CheckpointInterval || c.LogWindow%c.CheckpointInterval != 0:
		return fmt.Errorf("log window: %d must be a positive multiple of the checkpoint interval %d", c.LogWindow, c.CheckpointInterval)
	case c.MaxBatchRequests <= 0:
		return fmt.Errorf("max batch requests: must be positive")
	case c.MaxBatchBytes <= 0:
		return fmt.Errorf("max batch bytes: must be positive")
	case c.MaxInFlightBatches <= 0:
		return fmt.Errorf("max in-flight batches: must be positive")
	case c.ReplyWindow <= 0:
		return fmt.Errorf("reply window: must be positive")
	case c.RetransmitTicks <= 0:
		return fmt.Errorf("retransmit ticks: must be positive")
	case c.StateChunkBytes <= 0:
		return fmt.Errorf("state chunk bytes: must be positive")
	case c.MaxStateBytes < c.StateChunkBytes:
		return fmt.Errorf("max state bytes: %d is less than one chunk (%d)", c.MaxStateBytes, c.StateChunkBytes)
	case c.ViewChangeTicks <= 0:
		return fmt.Errorf("view change ticks: must be positive")
	case c.Signer == nil:
		return fmt.Errorf("signer: missing")
	}
	return nil
}
