package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func runCLI(args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	err = cmd.Execute()
	return out.String(), errb.String(), err
}

// `pbft sim --json` prints one JSON object with the fields scripts rely on.
func TestSimJSONHasTheDocumentedFields(t *testing.T) {
	out, _, err := runCLI("sim", "--seeds", "3", "--requests", "40", "--fast-crypto", "--json", "--quiet")
	if err != nil {
		t.Fatalf("sim: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	for _, k := range []string{"seeds", "violations", "liveness_failures", "committed_requests", "first_failing_seed"} {
		if _, ok := got[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, out)
		}
	}
	if got["seeds"].(float64) != 3 || got["committed_requests"].(float64) != 120 || got["first_failing_seed"] != nil {
		t.Errorf("unexpected summary: %s", out)
	}
}

// A sweep that finds a violation exits non-zero and names the seed and its replay command.
func TestSimReportsFailingSeedWithReplayCommand(t *testing.T) {
	out, _, err := runCLI("sim", "--replicas", "4", "--byzantine", "2", "--strategy", "equivocate",
		"--faulty-primary", "--seeds", "5", "--fast-crypto", "--quiet")
	if err == nil {
		t.Fatalf("expected a failing exit with f+1 equivocating replicas:\n%s", out)
	}
	if !strings.Contains(out, "violation: agreement") || !strings.Contains(out, "replay: go run ./cmd/pbft sim") {
		t.Fatalf("summary lacks the violation or its replay command:\n%s", out)
	}
}

// Bad flags are refused with a message that names the flag.
func TestSimRejectsBadFlagsNamingThem(t *testing.T) {
	cases := map[string][]string{
		"--replicas":       {"sim", "--replicas", "3"},
		"--byzantine":      {"sim", "--byzantine", "9"},
		"--strategy":       {"sim", "--strategy", "sneaky"},
		"--seeds":          {"sim", "--seeds", "0"},
		"--scheme":         {"sim", "--scheme", "RSA"},
		"--faulty-primary": {"sim", "--byzantine", "0", "--faulty-primary"},
		"--trace":          {"sim", "--trace", "--seeds", "2"},
	}
	for flag, args := range cases {
		_, _, err := runCLI(args...)
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%v: error %v does not name %s", args, err, flag)
		}
	}
}

// The replay command printed for a failing seed reproduces exactly that failure, with
// every option that shapes the run.
func TestReplayCommandReproducesTheFailure(t *testing.T) {
	args := []string{"sim", "--replicas", "4", "--byzantine", "2", "--strategy", "equivocate",
		"--faulty-primary", "--clients", "5", "--requests", "60", "--fast-crypto", "--quiet", "--json"}
	out, _, _ := runCLI(append(args, "--seeds", "20")...)
	var sweep struct {
		Failures []struct {
			Seed       uint64   `json:"seed"`
			Violations []string `json:"violations"`
			Replay     string   `json:"replay"`
		} `json:"failures"`
	}
	if err := json.Unmarshal([]byte(out), &sweep); err != nil || len(sweep.Failures) == 0 {
		t.Fatalf("no failures to replay (%v):\n%s", err, out)
	}
	f := sweep.Failures[0]
	replay := strings.Fields(strings.TrimPrefix(f.Replay, "go run ./cmd/pbft "))
	out, _, _ = runCLI(append(replay, "--quiet", "--json")...)
	var again struct {
		Failures []struct {
			Seed       uint64   `json:"seed"`
			Violations []string `json:"violations"`
		} `json:"failures"`
	}
	if err := json.Unmarshal([]byte(out), &again); err != nil || len(again.Failures) != 1 {
		t.Fatalf("replay %q did not fail once (%v):\n%s", f.Replay, err, out)
	}
	if again.Failures[0].Seed != f.Seed || strings.Join(again.Failures[0].Violations, "|") != strings.Join(f.Violations, "|") {
		t.Fatalf("replay of seed %d gave %+v, sweep gave %+v", f.Seed, again.Failures[0], f)
	}
}
