package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
)

// ErrNoBinaries reports that no PostgreSQL server binaries were found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or under /usr/lib/postgresql/*/bin; install them with: apt-get install -y postgresql")

// BinDirEnv names an environment variable that, when set, points at the
// directory holding initdb, pg_ctl and postgres and overrides the search.
const BinDirEnv = "PGCLUSTER_BINDIR"

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// FindBinDir returns the directory holding the newest PostgreSQL server
// binaries: $PGCLUSTER_BINDIR, else the newest of those on PATH and under
// /usr/lib/postgresql/*/bin. It returns ErrNoBinaries when there are none.
func FindBinDir() (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if !hasServerBinaries(dir) {
			return "", fmt.Errorf("%s=%s: %w", BinDirEnv, dir, ErrNoBinaries)
		}
		return dir, nil
	}
	var candidates []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(real))
		}
		candidates = append(candidates, filepath.Dir(p))
	}
	debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	candidates = append(candidates, debian...)

	best, bestVersion := "", -1
	for _, dir := range candidates {
		if !hasServerBinaries(dir) {
			continue
		}
		v := serverVersion(dir)
		if v > bestVersion {
			best, bestVersion = dir, v
		}
	}
	if best == "" {
		return "", ErrNoBinaries
	}
	return best, nil
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// serverVersion returns major*1000+minor of dir/postgres, or 0 if unknown.
func serverVersion(dir string) int {
	out, err := exec.Command(filepath.Join(dir, "postgres"), "--version").Output()
	if err != nil {
		return 0
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	return major*1000 + minor
}
