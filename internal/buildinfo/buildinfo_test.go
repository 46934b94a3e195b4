package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	start := Info{Version: Unknown, Commit: Unknown, GoVersion: "go0"}
	vcs := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want Info
	}{
		{"nothing known", debug.BuildInfo{}, start},
		{"go test binary", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Info{Version: "(devel)", Commit: Unknown, GoVersion: "go1.26.8"}},
		{"clean checkout", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
			Settings: vcs("vcs", "git", "vcs.revision", "0123abcd", "vcs.modified", "false")},
			Info{Version: "v1.2.3", Commit: "0123abcd", GoVersion: "go1.26.8"}},
		{"uncommitted changes", debug.BuildInfo{GoVersion: "go1.26.8",
			Settings: vcs("vcs.modified", "true", "vcs.revision", "0123abcd")},
			Info{Version: Unknown, Commit: "0123abcd-dirty", GoVersion: "go1.26.8"}},
	} {
		if got := fromBuildInfo(start, &tc.bi); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// A value stamped with -ldflags -X wins over the build info's; the Go
// version always comes from the build.
func TestReadStamped(t *testing.T) {
	if got := Read(); got.GoVersion != runtime.Version() || got.Version == "" || got.Commit == "" {
		t.Errorf("unstamped: %+v, want Go %s and no empty field", got, runtime.Version())
	}
	version, commit = "1.2.3", "0123abcd"
	t.Cleanup(func() { version, commit = "", "" })
	if got, want := Read(), (Info{Version: "1.2.3", Commit: "0123abcd", GoVersion: runtime.Version()}); got != want {
		t.Errorf("stamped: %+v, want %+v", got, want)
	}
}
