package network

import (
	"log/slog"
	"testing"

	"github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestLibp2pLogsGoToZapAtWarnAndAbove(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	routeLibp2pLogs(zap.New(core))
	log := gologshim.Logger("pbft-test").With("conn", 7).WithGroup("dial")
	log.Info("chatter")
	log.Debug("more chatter")
	log.Warn("dial failed", "peer", "x")
	log.Error("broken", slog.Group("why", "code", 3))

	got := logs.All()
	if len(got) != 2 {
		t.Fatalf("want the warning and the error only, got %v", got)
	}
	w, e := got[0], got[1]
	if w.Level != zapcore.WarnLevel || w.Message != "dial failed" || e.Level != zapcore.ErrorLevel {
		t.Fatalf("unexpected entries %v", got)
	}
	fields := w.ContextMap()
	if fields["logger"] != "pbft-test" || fields["conn"] != int64(7) || fields["dial.peer"] != "x" {
		t.Fatalf("warning fields %v", fields)
	}
	if e.ContextMap()["dial.why.code"] != int64(3) {
		t.Fatalf("error fields %v", e.ContextMap())
	}
}
