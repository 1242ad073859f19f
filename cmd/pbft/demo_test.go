package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The demo, the README's main job, passes end to end: a crashed backup does not stop
// the service, every result is voted by f+1 replicas, and reads see the last write.
func TestDemoPassesWithACrashedBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster")
	}
	var out, progress bytes.Buffer
	o := demoOptions{clusterOptions: clusterOptions{Replicas: 4, Clients: 4, Scheme: "Ed25519", LogLevel: "error"},
		Concurrency: 4, Duration: 3 * time.Second, Crash: true}
	if err := runDemo(context.Background(), o, &out, &progress); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"crashed replica", "demo passed", "voted by at least"} {
		if !strings.Contains(out.String()+progress.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
