//go:build !race

package proxy

// raceReleaseIO and raceAcquireIO tell the race detector of the order a
// socket gives (rawio_race_linux.go); nothing outside race builds.
func raceReleaseIO()          {}
func raceAcquireIO(_ uintptr) {}
