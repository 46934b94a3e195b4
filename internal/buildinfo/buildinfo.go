// Package buildinfo says which kanmon a binary is: its version, the commit
// it was built from and the Go version that built it. `kanmon version`
// prints it and the metric kanmon_build_info carries it as labels.
//
// The values come from runtime/debug.ReadBuildInfo: the main module's
// version and the VCS stamp that go build writes when it builds in a git
// checkout. A build that has neither (GOFLAGS=-buildvcs=false, a source
// tarball) can stamp them at link time, as `make deb` does:
//
//	go build -ldflags "-X github.com/kanmon-mail/kanmon/internal/buildinfo.version=1.2.3 \
//	    -X github.com/kanmon-mail/kanmon/internal/buildinfo.commit=0123abc" ./cmd/kanmon
//
// A stamped value wins over the build info's.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Unknown stands for a value the binary does not know.
const Unknown = "unknown"

// Set at link time with -ldflags -X (see the package doc); empty otherwise.
var (
	version string
	commit  string
)

// Info is what the binary knows of its own build.
type Info struct {
	// Version is the version stamped at link time, else the main module's
	// version from the build info ("(devel)" for a build inside the
	// module without a VCS stamp), else Unknown.
	Version string
	// Commit is the commit stamped at link time, else the build info's
	// vcs.revision with "-dirty" appended when vcs.modified is true (the
	// tree had uncommitted changes), else Unknown.
	Commit string
	// GoVersion is the Go release that built the binary, such as "go1.26.8".
	GoVersion string
}

// Read returns the binary's Info.
func Read() Info {
	info := Info{Version: Unknown, Commit: Unknown, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info = fromBuildInfo(info, bi)
	}
	if version != "" {
		info.Version = version
	}
	if commit != "" {
		info.Commit = commit
	}
	return info
}

// fromBuildInfo fills info from what bi holds.
func fromBuildInfo(info Info, bi *debug.BuildInfo) Info {
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	if bi.Main.Version != "" {
		info.Version = bi.Main.Version
	}
	var revision, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if revision != "" {
		info.Commit = revision
		if modified == "true" {
			info.Commit += "-dirty"
		}
	}
	return info
}
