package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/novamind/phiproxy/proxy"
)

// buildVersion and buildCommit are stamped by the Makefile:
//
//	go build -ldflags "-X main.buildVersion=$(git describe) -X main.buildCommit=$(git rev-parse HEAD)"
//
// Without them (go install, go run) the module version and VCS revision
// recorded in the binary's build information are used.
var buildVersion, buildCommit string

const versionUsage = `Usage: phiproxy version

Prints the version and the commit the binary was built from (stamped by
make build; else the module's build information) and the Go version.
`

// runVersion implements `phiproxy version`.
func runVersion(args []string, stdout io.Writer) error {
	fs := newFlagSet("version")
	pos, err := parseArgs(fs, args, versionUsage)
	if err != nil {
		return err
	}
	if err := noArgs("version", pos); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "phiproxy", version())
	return nil
}

// version describes the binary: version, commit, Go version.
func version() string {
	b := buildInfo()
	return b.Version + " (commit " + b.Commit + ", " + runtime.Version() + ")"
}

// buildInfo is the version and commit stamped by the Makefile, each
// falling back to the binary's build information. The proxy's
// phiproxy_build_info gauge reports the same (proxy.WithBuildInfo).
func buildInfo() proxy.BuildInfo {
	v, rev := proxy.BuildVersion()
	if buildVersion != "" {
		v = buildVersion
	}
	if buildCommit != "" {
		rev = buildCommit
	}
	return proxy.BuildInfo{Version: v, Commit: rev}
}
