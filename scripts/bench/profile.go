package main

// CPU profiles of this process (the in-process proxies).

import (
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
)

// startProfile starts a CPU profile of this process into file.
func startProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// printProfileTop prints where the proxy's time went in profiles (merged):
// go tool pprof -top, by flat and by cumulative time. If merged is set, the
// merged profile is also written there.
func printProfileTop(what, merged string, profiles ...string) {
	if len(profiles) == 0 {
		return
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		fmt.Printf("\n(go not in PATH; see the profile with: go tool pprof -top %s)\n", strings.Join(profiles, " "))
		return
	}
	if merged != "" && (len(profiles) > 1 || profiles[0] != merged) {
		out, err := exec.Command(goBin, append([]string{"tool", "pprof", "-proto", "-output", merged}, profiles...)...).CombinedOutput()
		if err != nil {
			fmt.Printf("\npprof -proto: %v: %s\n", err, out)
		} else {
			profiles = []string{merged}
		}
	}
	for _, args := range [][]string{{"-top", "-nodecount=15"}, {"-top", "-cum", "-nodecount=15"}} {
		fmt.Printf("\n%s: go tool pprof %s %s\n", what, strings.Join(args, " "), strings.Join(profiles, " "))
		out, err := exec.Command(goBin, append(append([]string{"tool", "pprof"}, args...), profiles...)...).CombinedOutput()
		if err != nil {
			fmt.Printf("pprof: %v\n", err)
		}
		os.Stdout.Write(out)
	}
}
