package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/pbft/client"
	"github.com/pbftkit/pbft/pbft/cluster"
)

func newClientCmd() *cobra.Command {
	var (
		config   string
		id       uint32
		timeout  time.Duration
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "client --config DIR/cluster.yaml (put KEY VALUE | get KEY | delete KEY)",
		Short: "Run one key-value operation on the cluster and print the result f+1 replicas voted for",
		Long: `client signs one operation as a registered client, sends it to the cluster and
prints the result once f+1 replicas replied the same. It exits 0 only on such
agreement; on timeout it exits 1.`,
		Args: func(_ *cobra.Command, args []string) error {
			_, err := kvOp(args)
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			op, _ := kvOp(args)
			if config == "" {
				return fmt.Errorf("--config: required: the cluster.yaml written by pbft init")
			}
			cl, err := cluster.Load(config)
			if err != nil {
				return err
			}
			me, err := cl.Client(id)
			if err != nil {
				return fmt.Errorf("--id: %w", err)
			}
			key, err := cl.LoadKey(me)
			if err != nil {
				return err
			}
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			c, err := client.New(client.Config{Cluster: cl, ID: id, Key: key, Logger: log})
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			res, err := c.Invoke(ctx, op)
			if err != nil {
				return fmt.Errorf("no result voted by f+1=%d replicas: %w", cl.F+1, err)
			}
			r, err := kvstore.DecodeResult(res.Value)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case !r.OK:
				fmt.Fprintf(out, "error: %s\n", r.Err)
			case strings.EqualFold(args[0], "get") && !r.Found:
				fmt.Fprintln(out, "(not found)")
			case strings.EqualFold(args[0], "get"):
				fmt.Fprintln(out, string(r.Value))
			default:
				fmt.Fprintln(out, "OK")
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "voted by replicas %v (f+1=%d) in view %d\n", res.Voters, cl.F+1, res.View)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&config, "config", "", "cluster.yaml")
	f.Uint32Var(&id, "id", 1, "registered client id to act as")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	f.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	return cmd
}

// kvOp encodes the operation the arguments name.
func kvOp(args []string) ([]byte, error) {
	usage := fmt.Errorf("want one of: put KEY VALUE | get KEY | delete KEY")
	if len(args) == 0 {
		return nil, usage
	}
	switch strings.ToLower(args[0]) {
	case "put":
		if len(args) != 3 {
			return nil, fmt.Errorf("put: want KEY VALUE, got %d arguments", len(args)-1)
		}
		return kvstore.Put(args[1], []byte(args[2])), nil
	case "get":
		if len(args) != 2 {
			return nil, fmt.Errorf("get: want KEY, got %d arguments", len(args)-1)
		}
		return kvstore.Get(args[1]), nil
	case "delete":
		if len(args) != 2 {
			return nil, fmt.Errorf("delete: want KEY, got %d arguments", len(args)-1)
		}
		return kvstore.Delete(args[1]), nil
	}
	return nil, fmt.Errorf("unknown operation %q: %w", args[0], usage)
}
