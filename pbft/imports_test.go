package pbft

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// forbiddenImports are packages through which the core could touch a clock, the
// network, the disk, a logger, randomness or goroutine scheduling. Entries ending in
// "/" forbid a whole tree.
var forbiddenImports = []string{
	"net", "net/",
	"os", "os/",
	"time",
	"sync", "sync/",
	"log", "log/",
	"io/fs", "io/ioutil",
	"syscall",
	"math/rand", "math/rand/v2",
	"crypto/rand",
	"go.uber.org/zap", "go.uber.org/zap/",
	"github.com/libp2p/",
	"runtime", "runtime/",
	"context",
}

func isForbiddenImport(path string) bool {
	for _, f := range forbiddenImports {
		if strings.HasSuffix(f, "/") {
			if strings.HasPrefix(path, f) {
				return true
			}
		} else if path == f {
			return true
		}
	}
	return false
}

// TestCorePackageImportsNoEffects keeps the core a pure state machine (doc.go): no
// effectful imports, no goroutines and no wall clock in its non-test files.
func TestCorePackageImportsNoEffects(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	parsed := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		parsed++
		timeNames := map[string]bool{"time": true}
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatalf("%s: import %s: %v", name, imp.Path.Value, err)
			}
			if isForbiddenImport(path) {
				t.Errorf("%s: imports %q", fset.Position(imp.Pos()), path)
			}
			if path == "time" && imp.Name != nil {
				timeNames[imp.Name.Name] = true
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: go statement in the core", fset.Position(n.Pos()))
			case *ast.SelectorExpr:
				if id, ok := n.X.(*ast.Ident); ok && timeNames[id.Name] && n.Sel.Name == "Now" {
					t.Errorf("%s: %s.Now in the core", fset.Position(n.Pos()), id.Name)
				}
			}
			return true
		})
	}
	if parsed < 5 {
		t.Fatalf("parsed only %d non-test files: is the test running in the package directory?", parsed)
	}
}

func TestForbiddenImportList(t *testing.T) {
	for _, p := range []string{"net", "net/http", "os", "os/exec", "time", "sync", "sync/atomic", "log/slog", "io/fs",
		"math/rand", "math/rand/v2", "crypto/rand", "go.uber.org/zap", "github.com/libp2p/go-libp2p", "runtime", "runtime/debug", "context", "syscall"} {
		if !isForbiddenImport(p) {
			t.Errorf("%q is allowed", p)
		}
	}
	for _, p := range []string{"fmt", "slices", "bytes", "errors", "github.com/pbftkit/pbft/crypto", "github.com/fxamacker/cbor/v2", "network", "timeline", "osm"} {
		if isForbiddenImport(p) {
			t.Errorf("%q is forbidden", p)
		}
	}
}
