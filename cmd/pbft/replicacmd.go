package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spf13/cobra"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/pbft/cluster"
	"github.com/pbftkit/pbft/pbft/replica"
)

func newReplicaCmd() *cobra.Command {
	var (
		config   string
		id       int
		data     string
		logLevel string
		metrics  string
		noSync   bool
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
			r, err := replica.Start(replica.Options{Cluster: cl, ID: uint32(id), Key: key, App: kvstore.New(), DataDir: data, NoSync: noSync, Logger: log})
			if err != nil {
				return err
			}
			if metrics != "" {
				reg := prometheus.NewRegistry()
				reg.MustRegister(r.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				ln, err := net.Listen("tcp", metrics)
				if err != nil {
					r.Stop()
					return fmt.Errorf("--metrics: %w", err)
				}
				srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
				go srv.Serve(ln)
				defer srv.Close()
				log.Info("serving Prometheus metrics on http://" + ln.Addr().String() + "/metrics")
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
	f.BoolVar(&noSync, "no-fsync", false, "write records to the OS without fsync: safe against crashes of this process, not of the machine")
	f.StringVar(&metrics, "metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9100)")
	return cmd
}
