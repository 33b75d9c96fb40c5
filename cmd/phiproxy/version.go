package main

import (
	"runtime"

	"github.com/novamind/phiproxy/proxy"
)

// version describes the binary: module version, VCS revision, Go version.
func version() string {
	v, rev := proxy.BuildVersion()
	return v + " (" + rev + ", " + runtime.Version() + ")"
}
