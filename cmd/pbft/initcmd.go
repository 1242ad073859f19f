package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft/cluster"
)

func newInitCmd() *cobra.Command {
	var (
		o   cluster.GenerateOptions
		out string
	)
	cmd := &cobra.Command{
		Use:   "init --replicas N --out DIR",
		Short: "Create keys for a new cluster and its cluster.yaml",
		Long: `init writes, in DIR, a private key for each replica and client (mode 0600) and the
cluster.yaml that lists them: ids, public keys, libp2p peer IDs, listen addresses
(replica i on HOST:BASE-PORT+i) and the protocol settings (batch size, checkpoint
interval, window, timeouts, signature scheme). Every node of the cluster uses the
same cluster.yaml; each needs only its own key file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out: required: the directory to write keys and cluster.yaml to")
			}
			if o.Replicas < 4 {
				return fmt.Errorf("--replicas: %d is too few; PBFT needs n >= 3f+1 with f >= 1, so at least 4", o.Replicas)
			}
			if o.Clients < 0 {
				return fmt.Errorf("--clients: must not be negative")
			}
			path, err := cluster.Generate(out, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d replicas (f=%d), %d clients, %s\n", path, o.Replicas, (o.Replicas-1)/3, o.Clients, o.Scheme)
			fmt.Fprintf(cmd.OutOrStdout(), "start replica i with: pbft replica --config %s --id i\n", path)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Replicas, "replicas", 4, "replicas n (n >= 3f+1)")
	f.IntVar(&o.Clients, "clients", 8, "client identities to register")
	f.StringVar(&out, "out", "", "directory for the keys and cluster.yaml")
	f.StringVar(&o.Host, "host", "127.0.0.1", "IP address the replicas listen on")
	f.IntVar(&o.BasePort, "base-port", 7000, "replica i listens on port base-port+i")
	f.StringVar(&o.Scheme, "scheme", crypto.DefaultScheme, "signature scheme: "+joinSchemes())
	f.StringVar(&o.Name, "cluster", "pbft", "cluster name (signatures are bound to it)")
	f.BoolVar(&o.QUIC, "quic", false, "replicas listen on QUIC (UDP) instead of TCP with Noise and yamux")
	return cmd
}

func joinSchemes() string {
	s := ""
	for i, n := range crypto.Schemes() {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}
