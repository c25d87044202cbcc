//go:build faults

package faults_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// projectorBin is the projector binary under test, built once by TestMain
// from this checkout, without the race detector: a user's binary, the
// whole command line with two projections of a user's kind (projectorbin),
// whose memory is measured (the in-process tests already run the worker
// under -race).
var projectorBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "projector-faults-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	projectorBin = filepath.Join(dir, "projector")
	// `go test` puts its own go command first in PATH.
	build := exec.Command("go", "build", "-o", projectorBin, "github.com/projector-run/projector/projector/faults/projectorbin")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: build the projector binary: %v\n", err)
		return 1
	}
	return m.Run()
}
