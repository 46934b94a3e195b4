package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/dovecottest"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/redistest"
	kmetrics "github.com/kanmon-mail/kanmon/metrics"
	"github.com/kanmon-mail/kanmon/proxy"
)

// BenchmarkLoginPath measures what one plaintext IMAP login costs kanmon
// (issue 11 item 1): b.N cycles of a fresh TCP connection, the greeting,
// "a1 LOGIN user passcode" until its tagged OK, "a2 LOGOUT" until its
// tagged OK and the close, over KANMON_LOGIN_USERS (16) 2FA users in
// turn, by KANMON_LOGIN_CONC (16) concurrent workers, all from
// 127.0.0.1, against a private Dovecot (master login, SASL PLAIN). kanmon
// runs as it ships: the default [lockout] (known-good and last-use
// writes on every success), metrics on, log_level info, with the
// per-address caps of cmd/kanmon-bench raised for the one client address.
//
//	go test -run '^$' -bench 'BenchmarkLoginPath/inproc' -benchtime 3000x \
//	    -cpuprofile /tmp/login.cpu -memprofile /tmp/login.mem ./e2e
//	go tool pprof -top -tagfocus side=kanmon /tmp/login.cpu
//
// (the profiles also hold the setup: Dovecot's start runs in its own
// processes, kanmon's start is a few ms). Dovecot bounds the rate (about
// 4 ms of its CPU a login), so kanmon is idle most of the time: its CPU
// per login includes the Go runtime's idle work (sysmon, spinning and
// parking threads), which a profile of kanmon's own goroutines leaves
// out; the serve sub-benchmark measures all of it.
//
// Sub-benchmarks:
//
//   - inproc: kanmon in this process (the proxy package, as `kanmon serve`
//     wires it), for pprof. Its goroutines carry the pprof label
//     side=kanmon, the load clients' side=client, so
//     `go tool pprof -tagfocus side=kanmon` is kanmon's share (GC and the
//     scheduler carry no label). Reports proc-cpu-us/op (this whole
//     process: kanmon and clients), goroutines/op and log-lines/op.
//   - serve: the real `kanmon serve` binary (KANMON_LOGIN_BIN, else one
//     built from ../cmd/kanmon) as a child; reports kanmon-cpu-us/op, its
//     utime+stime from /proc per login, the figure issue 11 quotes.
//     KANMON_LOGIN_ATTACH runs a command on it for the measured logins,
//     "{pid}" replaced by its pid, and logs what the command printed:
//     KANMON_LOGIN_ATTACH='strace -c -f -p {pid}' counts its system calls
//     (its timing is then meaningless), 'perf record -F 999 -g -p {pid}
//     -o /tmp/login.perf' samples it, kernel included.
//   - wire: kanmon in this process in front of a recording forwarder in
//     front of Dovecot; reports the lines kanmon sends Dovecot per login
//     (backend-cmds/op), the lines back, and which side ends the backend
//     connection, and logs one redacted transcript.
func BenchmarkLoginPath(b *testing.B) {
	conc := envInt(b, "KANMON_LOGIN_CONC", 16)
	nUsers := envInt(b, "KANMON_LOGIN_USERS", 16)
	users := make([]string, nUsers)
	var dcUsers []dovecottest.User
	for i := range users {
		users[i] = fmt.Sprintf("lp%03d", i+1)
		dcUsers = append(dcUsers, dovecottest.User{Name: users[i], Password: "pw-" + users[i]})
	}
	dc := startDovecot(b, dovecottest.Options{Users: dcUsers})
	opts := func(backend string) kanmontest.Options {
		pc := map[string][]string{}
		for _, u := range users {
			pc[u] = []string{"bench"}
		}
		return kanmontest.Options{
			IMAPBackend: backend,
			MasterUser:  masterUser, MasterPassword: masterPassword,
			Listeners: []string{config.TLSNone},
			Lockout:   kanmontest.ServerLockout,
			Extra:     "max_connections = 30000\nmax_preauth_per_ip = 30000\nmax_sessions_per_user_ip = 30000\ndrain_timeout = \"1s\"\n",
			Passcodes: pc,
			LogLevel:  envString("KANMON_LOGIN_LOG_LEVEL", "info"),
		}
	}
	secrets := func(f *kanmontest.Files) []string {
		s := make([]string, len(users))
		for i, u := range users {
			s[i] = f.Passcode(u, "bench")
		}
		return s
	}

	// Each sub-benchmark's kanmon is started once, under the parent (a
	// sub-benchmark's cleanups run after each of its runs), and reused for
	// the b.N = 1 probe and the measured run.
	parent := b
	var inproc, wired *profKanmon
	var rec *recorder
	var serveFiles *kanmontest.Files
	var serveProc *serveProcess
	b.Run("inproc", func(b *testing.B) {
		if inproc == nil {
			inproc = startProfKanmon(parent, opts(dc.IMAPAddr))
		}
		k := inproc
		b.ReportAllocs() // kanmon's and the clients' (about 24 allocations, 2.4 KB a cycle)
		var lines0 int
		var gor0 uint64
		var ru0, ru1 syscall.Rusage
		runLoginPath(b, k.addr, users, secrets(k.files), conc, func() {
			lines0 = k.logLines()
			gor0 = readMetric("/sched/goroutines-created:goroutines")
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		})
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		n := float64(b.N)
		b.ReportMetric(float64((rusageCPU(ru1)-rusageCPU(ru0)).Microseconds())/n, "proc-cpu-us/op")
		b.ReportMetric(float64(readMetric("/sched/goroutines-created:goroutines")-gor0)/n, "goroutines/op")
		b.ReportMetric(float64(k.logLines()-lines0)/n, "log-lines/op")
	})

	b.Run("serve", func(b *testing.B) {
		if serveProc == nil {
			serveFiles = kanmontest.WriteFiles(parent, opts(dc.IMAPAddr))
			serveProc = startServe(parent, serveBinary(parent), serveFiles.ConfigPath, serveFiles.IMAPPlain)
		}
		measureServe(b, serveFiles, serveProc.cmd.Process.Pid, users, secrets(serveFiles), conc)
	})

	// serve-redis is serve with [redis]: the lockout shared through a
	// private redis-server (issue 12), for CPU and latency side by side
	// with serve's bbolt.
	var redisFiles *kanmontest.Files
	var redisProc *serveProcess
	var redisSrv *redistest.Server
	b.Run("serve-redis", func(b *testing.B) {
		if redisProc == nil {
			redisFiles, redisProc, redisSrv = startRedisServe(parent, opts(dc.IMAPAddr))
		}
		rc := redisSrv.Client(b)
		_ = rc.ConfigResetStat(b.Context()).Err()
		measureServe(b, redisFiles, redisProc.cmd.Process.Pid, users, secrets(redisFiles), conc)
		reportRedisCommands(b, rc)
	})

	// serve-pg is serve with the accounts in PostgreSQL (issue 13): the
	// same accounts file imported, so the node serves the same logins
	// from its snapshot.
	var pgFiles *kanmontest.Files
	var pgProc *serveProcess
	b.Run("serve-pg", func(b *testing.B) {
		if pgProc == nil {
			pgFiles, pgProc = startPGServe(parent, opts(dc.IMAPAddr))
		}
		measureServe(b, pgFiles, pgProc.cmd.Process.Pid, users, secrets(pgFiles), conc)
	})

	b.Run("wire", func(b *testing.B) {
		if wired == nil {
			rec = startRecorder(parent, dc.IMAPAddr)
			wired = startProfKanmon(parent, opts(rec.addr))
		}
		k := wired
		runLoginPath(b, k.addr, users, secrets(k.files), conc, func() { rec.reset() })
		rec.report(b)
	})
}

// measureServe runs the login cycles against a `kanmon serve` (pid) and
// reports its CPU per login from /proc, with KANMON_LOGIN_ATTACH run on
// it meanwhile.
func measureServe(b *testing.B, files *kanmontest.Files, pid int, users, secrets []string, conc int) {
	var cpu0 time.Duration
	var stopAttached func() string
	runLoginPath(b, files.IMAPPlain, users, secrets, conc, func() {
		if cmd := os.Getenv("KANMON_LOGIN_ATTACH"); cmd != "" {
			stopAttached = attach(b, cmd, pid)
		}
		cpu0 = procStatCPU(b, pid)
	})
	cpu := procStatCPU(b, pid) - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "kanmon-cpu-us/op")
	if stopAttached != nil {
		b.Logf("KANMON_LOGIN_ATTACH on pid %d over %d logins:\n%s", pid, b.N, stopAttached())
	}
}

// runLoginPath runs a warm-up of 2 × conc login cycles, calls started,
// resets the timer, and runs b.N cycles with conc workers; any failed
// cycle fails the benchmark. It reports logins/s.
func runLoginPath(b *testing.B, addr string, users, secrets []string, conc int, started func()) {
	b.Helper()
	for i := range 2 * conc {
		if err := loginPathCycle(addr, users[i%len(users)], secrets[i%len(users)]); err != nil {
			b.Fatalf("warm-up login: %v", err)
		}
	}
	started()
	b.ResetTimer()
	start := time.Now()
	var next, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	took := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go pprof.Do(context.Background(), pprof.Labels("side", "client"), func(context.Context) {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) || failed.Load() > 10 {
					return
				}
				u := int(i) % len(users)
				t0 := time.Now()
				if err := loginPathCycle(addr, users[u], secrets[u]); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
				took[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "logins/s")
	b.ReportMetric(float64(percentile(took, 50).Microseconds()), "p50-us")
	b.ReportMetric(float64(percentile(took, 99).Microseconds()), "p99-us")
	if e := firstErr.Load(); e != nil {
		b.Fatalf("%d login cycles failed; first: %v", failed.Load(), *e)
	}
}

// loginPathCycle is one login: connect, greeting, LOGIN until its tagged
// OK, LOGOUT until its tagged OK, then read until kanmon closes. The dial
// has no context (a context with a deadline costs the client a goroutine
// per connect); the deadline bounds every read.
func loginPathCycle(addr, user, secret string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(c, 1024)
	if g, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
		return fmt.Errorf("greeting %q: %v", g, err)
	}
	if _, err := io.WriteString(c, "a1 LOGIN "+user+" \""+secret+"\"\r\n"); err != nil {
		return err
	}
	if l, err := readTagged(br, "a1"); err != nil || !strings.HasPrefix(l, "a1 OK") {
		return fmt.Errorf("login: %q: %v", l, err)
	}
	if _, err := io.WriteString(c, "a2 LOGOUT\r\n"); err != nil {
		return err
	}
	if l, err := readTagged(br, "a2"); err != nil || !strings.HasPrefix(l, "a2 OK") {
		return fmt.Errorf("logout: %q: %v", l, err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fmt.Errorf("after logout: %w", err)
	}
	return nil
}

// profKanmon is an in-process kanmon wired as `kanmon serve` wires it
// (lockout guard, last use, metrics, a text log at the config's level to
// a file), its goroutines labelled side=kanmon.
type profKanmon struct {
	files   *kanmontest.Files
	addr    string
	logPath string
}

func startProfKanmon(b testing.TB, opts kanmontest.Options) *profKanmon {
	b.Helper()
	files := kanmontest.WriteFiles(b, opts)
	cfg, err := config.Load(files.ConfigPath)
	if err != nil {
		b.Fatal(err)
	}
	lns, err := proxy.Listen(cfg)
	if err != nil {
		b.Fatal(err)
	}
	rt, err := proxy.LoadGeneration(cfg)
	if err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(b.TempDir(), "kanmon.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: level}))
	k := &profKanmon{files: files, addr: files.IMAPPlain, logPath: logPath}
	ctx, cancel := context.WithCancel(context.Background())
	var srv *proxy.Server
	var wg sync.WaitGroup
	var stop func()
	pprof.Do(context.Background(), pprof.Labels("side", "kanmon"), func(context.Context) {
		guard, err := proxy.OpenLockout(rt)
		if err != nil {
			b.Fatal(err)
		}
		lastUse, err := auth.OpenLastUse(filepath.Join(cfg.StateDir, auth.LastUseDBName), 0)
		if err != nil {
			b.Fatal(err)
		}
		m := kmetrics.New()
		m.WatchLockouts(guard.LockCounts)
		srv = proxy.NewServer(log, rt, proxy.ServerOptions{Lockout: guard, LastUse: lastUse, Metrics: m})
		for i, ln := range lns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = srv.Serve(ctx, ln, cfg.Listeners[i])
			}()
		}
		stop = func() {
			cancel()
			wg.Wait()
			srv.CloseSessions()
			srv.Wait()
			_ = guard.Close()
			_ = lastUse.Close()
			logFile.Close()
		}
	})
	b.Cleanup(func() {
		if stop != nil {
			stop()
		}
		if b.Failed() {
			text, _ := os.ReadFile(logPath)
			b.Logf("kanmon log:\n%s", text)
		}
	})
	return k
}

// logLines counts the lines kanmon has logged so far.
func (k *profKanmon) logLines() int {
	text, _ := os.ReadFile(k.logPath)
	return strings.Count(string(text), "\n")
}

// readMetric reads one uint64 runtime metric.
func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func rusageCPU(ru syscall.Rusage) time.Duration {
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

// procStatCPU is pid's utime + stime from /proc/PID/stat (all threads).
func procStatCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / ticks
}

// attach runs cmdline (split at spaces, each "{pid}" replaced by pid),
// such as "strace -c -f -p {pid}" or "perf record -g -p {pid} -o FILE",
// for the measured logins; the function it returns stops it with SIGINT
// and returns what it printed.
func attach(b *testing.B, cmdline string, pid int) func() string {
	b.Helper()
	args := strings.Fields(strings.ReplaceAll(cmdline, "{pid}", strconv.Itoa(pid)))
	cmd := exec.Command(args[0], args[1:]...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatalf("KANMON_LOGIN_ATTACH: %v", err)
	}
	time.Sleep(time.Second) // let it attach to every thread
	return func() string {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		return out.String()
	}
}

// recorder is a TCP forwarder between kanmon and Dovecot that counts the
// lines each way and notes which side ended each connection first.
type recorder struct {
	addr string
	mu   sync.Mutex
	// conns counts the backend connections; cmds the lines kanmon sent,
	// by verb; linesBack the lines Dovecot sent; bytesTo and bytesBack
	// the bytes each way; endedBy which side's EOF came first.
	conns, linesBack, bytesTo, bytesBack int
	cmds                                 map[string]int
	endedBy                              map[string]int
	transcript                           []string
}

func startRecorder(b testing.TB, backend string) *recorder {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	r := &recorder{addr: ln.Addr().String()}
	r.reset()
	b.Cleanup(func() { ln.Close() })
	go pprof.Do(context.Background(), pprof.Labels("side", "wire"), func(context.Context) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.forward(c, backend)
		}
	})
	return r
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns, r.linesBack, r.bytesTo, r.bytesBack = 0, 0, 0, 0
	r.cmds, r.endedBy, r.transcript = map[string]int{}, map[string]int{}, nil
}

// forward relays one kanmon connection to the backend line by line.
func (r *recorder) forward(k net.Conn, backend string) {
	defer k.Close()
	d, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer d.Close()
	r.mu.Lock()
	r.conns++
	keep := r.transcript == nil
	if keep {
		r.transcript = []string{}
	}
	r.mu.Unlock()
	var first sync.Once
	var wg sync.WaitGroup
	note := func(line string) {
		if keep {
			r.mu.Lock()
			r.transcript = append(r.transcript, line)
			r.mu.Unlock()
		}
	}
	pipe := func(src, dst net.Conn, toBackend bool) {
		defer wg.Done()
		br := bufio.NewReader(src)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				_, _ = io.WriteString(dst, line)
				r.mu.Lock()
				if toBackend {
					r.bytesTo += len(line)
					f := strings.Fields(line)
					verb := "(continuation)"
					if len(f) >= 2 {
						verb = strings.ToUpper(f[1])
					}
					r.cmds[verb]++
				} else {
					r.bytesBack += len(line)
					r.linesBack++
				}
				r.mu.Unlock()
				if toBackend {
					if f := strings.Fields(line); len(f) >= 4 && strings.EqualFold(f[1], "AUTHENTICATE") {
						line = f[0] + " " + f[1] + " " + f[2] + " <initial response>\r\n"
					}
					note("kanmon → dovecot: " + strings.TrimRight(line, "\r\n"))
				} else {
					note("dovecot → kanmon: " + strings.TrimRight(line, "\r\n"))
				}
			}
			if err != nil {
				side := "dovecot"
				if toBackend {
					side = "kanmon"
				}
				first.Do(func() {
					r.mu.Lock()
					r.endedBy[side]++
					r.mu.Unlock()
					note(side + " ended the connection first")
				})
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				return
			}
		}
	}
	wg.Add(2)
	go pipe(k, d, true)
	go pipe(d, k, false)
	wg.Wait()
}

// report logs the counts per login and one transcript.
func (r *recorder) report(b *testing.B) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := float64(b.N)
	total := 0
	var verbs []string
	for v, c := range r.cmds {
		total += c
		verbs = append(verbs, fmt.Sprintf("%s %.2f", v, float64(c)/n))
	}
	slices.Sort(verbs)
	b.ReportMetric(float64(r.conns)/n, "backend-conns/op")
	b.ReportMetric(float64(total)/n, "backend-cmds/op")
	b.ReportMetric(float64(r.linesBack)/n, "backend-lines-back/op")
	b.ReportMetric(float64(r.bytesTo)/n, "backend-bytes-to/op")
	b.ReportMetric(float64(r.bytesBack)/n, "backend-bytes-back/op")
	b.Logf("%d logins, %d backend connections; lines kanmon sent per login by verb: %s; ended first by: %v\none connection:\n%s",
		b.N, r.conns, strings.Join(verbs, ", "), r.endedBy, strings.Join(r.transcript, "\n"))
	if r.conns != b.N {
		b.Errorf("%d backend connections for %d logins", r.conns, b.N)
	}
}
