package main

import "github.com/spf13/cobra"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "pbft",
		Short:         "A Byzantine fault-tolerant state machine replication framework (PBFT)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newInitCmd(), newReplicaCmd(), newClientCmd(), newDemoCmd(), newBenchCmd(), newSimCmd())
	return root
}
