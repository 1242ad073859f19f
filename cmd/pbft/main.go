// Command pbft runs, tests and benchmarks a PBFT cluster.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pbft:", err)
		os.Exit(1)
	}
}
