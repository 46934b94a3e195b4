//go:build unix

package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's CPU times; it is
// 100 on every Linux.
const clockTick = 10 * time.Millisecond

// statFields returns the fields of /proc/<pid>/stat after the command
// name: [0] is field 3 (state), so field k is at k-3.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// procCPU is a process's own CPU time, user + system (utime + stime).
func procCPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	u, _ := strconv.ParseInt(f[14-3], 10, 64)
	s, _ := strconv.ParseInt(f[15-3], 10, 64)
	return time.Duration(u+s) * clockTick, nil
}

// forGroup calls fn with the pid and the /proc/PID/stat fields
// (statFields) of each live process in group pgid.
func forGroup(pgid int, fn func(pid int, f []string)) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 3 || f[5-3] != strconv.Itoa(pgid) {
			continue
		}
		fn(pid, f)
	}
}

// groupCPU is the CPU time of every live process in group pgid plus what
// their reaped children used (utime + stime + cutime + cstime): for
// Dovecot, whose master reaps the short-lived imap processes.
func groupCPU(pgid int) time.Duration {
	var ticks int64
	forGroup(pgid, func(_ int, f []string) {
		if len(f) < 15 {
			return
		}
		for _, k := range []int{14, 15, 16, 17} {
			n, _ := strconv.ParseInt(f[k-3], 10, 64)
			ticks += n
		}
	})
	return time.Duration(ticks) * clockTick
}

// groupPSSKiB sums the proportional set size (Pss in
// /proc/PID/smaps_rollup: each shared page divided among the processes
// that map it) over the live processes of group pgid.
func groupPSSKiB(pgid int) (kib int64, procs int) {
	forGroup(pgid, func(pid int, _ []string) {
		if r, err := statusField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:"); err == nil {
			kib += r
			procs++
		}
	})
	return kib, procs
}

// selfCPU is this process's CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssKiB reads VmRSS from /proc/<pid>/status.
func rssKiB(pid int) (int64, error) {
	return statusField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

// statusField reads a "Name: N kB" line of a /proc file.
func statusField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				return strconv.ParseInt(fs[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, name)
}

// machine describes the host for the report.
func machine() string {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mhz := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "cpu MHz"); ok {
				mhz = " @ " + strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":")) + " MHz"
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("nproc %d, CPU %q%s%s%s, %s", runtime.NumCPU(), model, mhz, mem, kernel, runtime.Version())
}

// loadAvg returns the 1-minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
