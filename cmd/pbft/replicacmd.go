package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/network/cluster"
	"github.com/pbftkit/pbft/replica"
)

func newReplicaCmd() *cobra.Command {
	var (
		config   string
		id       int
		data     string
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "replica --config DIR/cluster.yaml --id I",
		Short: "Run one replica of the cluster (with the key-value application) until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config == "" {
				return fmt.Errorf("--config: required: the cluster.yaml written by pbft init")
			}
			cl, err := cluster.Load(config)
			if err != nil {
				return err
			}
			if id < 0 || id >= len(cl.Replicas) {
				return fmt.Errorf("--id: %d is not a replica of %s (ids are 0..%d)", id, config, len(cl.Replicas)-1)
			}
			me := &cl.Replicas[id]
			key, err := cl.LoadKey(me)
			if err != nil {
				return err
			}
			if data == "" {
				data = filepath.Join(filepath.Dir(config), fmt.Sprintf("replica-%d.data", id))
			}
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			defer log.Sync()
			r, err := replica.Start(replica.Options{Cluster: cl, ID: uint32(id), Key: key, App: kvstore.New(), DataDir: data, Logger: log})
			if err != nil {
				return err
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			select {
			case s := <-sig:
				log.Info("signal received, shutting down: " + s.String())
			case <-r.Done():
			}
			return r.Stop()
		},
	}
	f := cmd.Flags()
	f.StringVar(&config, "config", "", "cluster.yaml")
	f.IntVar(&id, "id", -1, "this replica's id")
	f.StringVar(&data, "data", "", "data directory for the replica's durable records (default: replica-ID.data beside cluster.yaml)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
