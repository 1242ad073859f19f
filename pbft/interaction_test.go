package pbft

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// Data-driven interaction tests, in the style of etcd-io/raft's testdata: each file in
// testdata/interactions is a script of steps over the in-memory harness (deliver, tick,
// crash, restart, isolate, print), and beside each step the output it must produce:
// every delivery, execution, reply, stable checkpoint, install and drop, in order.
// Scripts are the protocol's behaviour written down; a change that alters it shows as a
// diff. After a deliberate change, regenerate the expected output with
//
//	go test ./pbft -run TestInteractions -rewrite
//
// and read the diff before committing it.
//
// Commands:
//
//	cluster n=N                 a new cluster of N replicas (testConfig: checkpoints every 4)
//	request client=C op=OP [to=(R,...)]  client C signs its next request, sends it to each R (the primary)
//	requests count=K clients=C  K requests spread over C clients, to the primary
//	run [quiet]                 deliver until nothing is in flight
//	tick [rounds=N] [quiet]     every live replica ticks N times (1), delivering after each
//	crash id=R | restart id=R | isolate id=R | reconnect id=R
//	status                      each replica's view, executed seq and stable checkpoint
//
// quiet prints only executions, stable checkpoints, installs and drops.
func TestInteractions(t *testing.T) {
	datadriven.Walk(t, "testdata/interactions", func(t *testing.T, path string) {
		var c *tCluster
		var out strings.Builder
		quiet := false
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			out.Reset()
			quiet = d.HasArg("quiet")
			intArg := func(key string, def int) int {
				if !d.HasArg(key) {
					return def
				}
				var v int
				d.ScanArgs(t, key, &v)
				return v
			}
			if d.Cmd != "cluster" && c == nil {
				d.Fatalf(t, "%s before cluster", d.Cmd)
			}
			switch d.Cmd {
			case "cluster":
				c = newCluster(t, intArg("n", 4))
				c.events = func(format string, args ...any) {
					line := fmt.Sprintf(format, args...)
					if quiet && strings.Contains(line, " -> ") {
						return
					}
					out.WriteString(line + "\n")
				}
			case "request":
				var op string
				d.ScanArgs(t, "op", &op)
				req := c.request(ClientID(intArg("client", 1)), op)
				arg, ok := d.Arg("to")
				if !ok {
					c.submit(int(c.reps[0].Status().Primary), req)
					break
				}
				for _, v := range arg.Vals {
					var to int
					if _, err := fmt.Sscan(v, &to); err != nil {
						d.Fatalf(t, "to=%s: %v", v, err)
					}
					c.submit(to, req)
				}
			case "requests":
				for _, req := range c.requests(intArg("count", 1), intArg("clients", 1), "op") {
					c.submit(int(c.reps[0].Status().Primary), req)
				}
			case "run":
				c.run()
			case "tick":
				c.tickAll(intArg("rounds", 1))
			case "crash":
				c.crash(intArg("id", 0))
			case "restart":
				c.restart(intArg("id", 0))
			case "isolate":
				c.isolate(intArg("id", 0))
			case "reconnect":
				c.reconnect(intArg("id", 0))
			case "status":
				for i, r := range c.reps {
					st := r.Status()
					fmt.Fprintf(&out, "r%d: view=%d active=%v executed=%d stable=%d", i, st.View, st.Active, st.Executed, st.LowMark)
					if c.down[i] {
						out.WriteString(" (down)")
					}
					out.WriteString("\n")
				}
			default:
				d.Fatalf(t, "unknown command %s", d.Cmd)
			}
			if out.Len() == 0 {
				return "ok\n"
			}
			return out.String()
		})
	})
}

// nodeName names a frame's sender in an interaction script.
func nodeName(from int) string {
	if from == clientNode {
		return "client"
	}
	return fmt.Sprintf("r%d", from)
}

// describe is one readable line for a message.
func describe(env *Envelope) string {
	i := infoOf(env)
	switch i.Type {
	case MsgPrePrepare, MsgPrepare, MsgCommit:
		return fmt.Sprintf("%s from %d v=%d n=%d d=%s", i.Type, i.From, i.View, i.Seq, i.Digest.Short())
	case MsgCheckpoint:
		return fmt.Sprintf("%s from %d n=%d state=%s", i.Type, i.From, i.Seq, i.Digest.Short())
	case MsgStateRequest, MsgStateResponse:
		return fmt.Sprintf("%s from %d n=%d chunk=%d", i.Type, i.From, i.Seq, i.Chunk)
	case MsgRequest:
		var r Request
		if Unmarshal(env.Msg.Body, &r) == nil {
			return fmt.Sprintf("request client=%d t=%d op=%s", r.Client, r.Timestamp, r.Op)
		}
	case MsgViewChange:
		var vc ViewChange
		if Unmarshal(env.Msg.Body, &vc) == nil {
			return fmt.Sprintf("%s from %d v=%d", i.Type, i.From, vc.NewView)
		}
	case MsgNewView:
		var nv NewView
		if Unmarshal(env.Msg.Body, &nv) == nil {
			return fmt.Sprintf("%s from %d v=%d (%d view changes, %d pre-prepares)", i.Type, i.From, nv.View, len(nv.ViewChanges), len(nv.PrePrepares))
		}
	}
	return fmt.Sprintf("%s from %d", i.Type, i.From)
}
