//go:build unix

// Command kanmon-bench measures kanmon against direct access to the same
// real Dovecot, in one run, on loopback only:
//
//  1. login rate: connect, LOGIN, LOGOUT cycles over users user1..userN
//     (passcodes at kanmon, the users' passwords at Dovecot), at each
//     concurrency, for a fixed time, plaintext and TLS;
//  2. throughput: FETCH 1:* BODY.PEEK[] of a mailbox of M × 1 MiB
//     messages, plaintext and TLS on the client side;
//  3. idle memory: N IDLE sessions held through kanmon, plaintext and TLS,
//     and kanmon's RSS growth per session;
//  4. reload: the accounts file grown step by step (-reload-steps, up to
//     50,000 accounts and 100,000 passcodes), the `kanmon reload` round
//     trip after each step, kanmon's memory, and which live sessions
//     survive (only the revoked ones may be closed).
//
// It starts a private Dovecot (internal/dovecottest) and the real
// `kanmon serve` binary (-kanmon) as a separate process, so that kanmon's
// CPU (utime + stime from /proc/PID/stat) and RSS (VmRSS) are its own.
// Every loop is bounded in time and count; the whole run stops by itself.
// scripts/bench.sh builds both binaries and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kanmon-mail/kanmon/internal/dovecottest"
)

const (
	masterUser     = "kanmon"
	masterPassword = "bench-master-pw"
	bulkUser       = "bulk"
)

type options struct {
	kanmon        string
	phases        map[string]bool
	users         int
	loginDur      time.Duration
	concurrency   []int
	fetchMsgs     int
	fetchRounds   int
	idle          int
	idleWorkers   int
	reloadSteps   string
	reloadTimeout time.Duration
	dovecotClient int
	gcWait        time.Duration
	out           string
	maxTime       time.Duration
}

func main() {
	var o options
	var phases, conc string
	flag.StringVar(&o.kanmon, "kanmon", "", "path of the kanmon binary to run as `kanmon serve` (required)")
	flag.StringVar(&phases, "phases", "login,fetch,idle,reload", "phases to run, comma-separated")
	flag.IntVar(&o.users, "users", 200, "login users user1..userN")
	flag.DurationVar(&o.loginDur, "login-duration", 10*time.Second, "duration of each login-rate run")
	flag.StringVar(&conc, "concurrency", "16,64", "login-rate concurrencies, comma-separated")
	flag.IntVar(&o.fetchMsgs, "fetch-messages", 200, "1 MiB messages in the FETCH mailbox")
	flag.IntVar(&o.fetchRounds, "fetch-rounds", 5, "timed FETCH rounds per target")
	flag.IntVar(&o.idle, "idle", 5000, "IDLE sessions to hold through kanmon, per mode")
	flag.IntVar(&o.idleWorkers, "idle-workers", 32, "concurrent clients opening the IDLE sessions")
	flag.StringVar(&o.reloadSteps, "reload-steps", "5000:10000,50000:100000", "ACCOUNTS:PASSCODES sizes the accounts file grows to, one reload each, comma-separated")
	flag.DurationVar(&o.reloadTimeout, "reload-timeout", 90*time.Second, "give up on one reload after this long")
	flag.IntVar(&o.dovecotClient, "dovecot-imap-client-limit", 1, "Dovecot's service imap { client_limit } (1, Dovecot's default: one imap process per session)")
	flag.DurationVar(&o.gcWait, "idle-gc-wait", 60*time.Second, "how long login cycles may run to bring on kanmon's next garbage collection while the IDLE sessions are held")
	flag.StringVar(&o.out, "out", "", "also write the report (Markdown) to this `file`")
	flag.DurationVar(&o.maxTime, "max-time", 15*time.Minute, "abort the whole run after this long")
	relayTo := flag.String("splice-relay-to", "", "run only the reference splice relay to this `address` (the FETCH phase starts it)")
	flag.Parse()
	if *relayTo != "" {
		runSpliceRelay(*relayTo)
		return
	}
	if o.kanmon == "" {
		fmt.Fprintln(os.Stderr, "kanmon-bench: -kanmon PATH is required (scripts/bench.sh builds it)")
		os.Exit(2)
	}
	o.phases = map[string]bool{}
	for _, p := range strings.Split(phases, ",") {
		o.phases[strings.TrimSpace(p)] = true
	}
	for _, c := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "kanmon-bench: bad -concurrency %q\n", conc)
			os.Exit(2)
		}
		o.concurrency = append(o.concurrency, n)
	}

	tb := &toolTB{}
	defer tb.runCleanups()
	// A signal or the overall time limit ends the run, Dovecot and kanmon
	// included.
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "kanmon-bench: %v, stopping\n", s)
		case <-time.After(o.maxTime):
			fmt.Fprintf(os.Stderr, "kanmon-bench: -max-time %v reached, stopping\n", o.maxTime)
		}
		tb.exit(3)
	}()
	if err := run(context.Background(), tb, o); err != nil {
		tb.Fatalf("kanmon-bench: %v", err)
	}
}

func run(ctx context.Context, tb *toolTB, o options) error {
	start := time.Now()
	rep := &report{}
	nofile := raiseNoFile(uint64(4*o.idle + 10000))
	rep.machine = machine()
	rep.addf("- RLIMIT_NOFILE (soft) for the tool, Dovecot and kanmon: %d", nofile)

	users := make([]string, o.users)
	dusers := []dovecottest.User{{Name: bulkUser, Password: "pw-" + bulkUser}}
	for i := range users {
		users[i] = fmt.Sprintf("user%d", i+1)
		dusers = append(dusers, dovecottest.User{Name: users[i], Password: "pw-" + users[i]})
	}
	// Both idle modes run at once, each with its own kanmon.
	maxConns := max(1000, 2*o.idle+2*o.users+200)
	dc := dovecottest.Start(tb, dovecottest.Options{
		Users:              dusers,
		MasterUser:         masterUser,
		MasterPassword:     masterPassword,
		TLS:                true,
		MaxUserConnections: maxConns,
		IMAPClientLimit:    o.dovecotClient,
	})
	dovecotPGID := dovecotPID(dc)
	rep.addf("- Dovecot: %s, private instance in %s (imap client_limit %d, mail_max_userip_connections and process limits sized for %d)", dovecotVersion(), dc.Dir, o.dovecotClient, maxConns)

	if o.phases["fetch"] {
		t0 := time.Now()
		deliverMailbox(tb, dc, o.fetchMsgs)
		rep.addf("- FETCH mailbox: %d messages × 1 MiB delivered into %s's Maildir in %v", o.fetchMsgs, bulkUser, time.Since(t0).Round(time.Millisecond))
	}

	kdir, err := os.MkdirTemp("", "kanmon-bench-")
	if err != nil {
		return err
	}
	tb.Cleanup(func() {
		if os.Getenv("KANMON_BENCH_KEEP") == "" {
			os.RemoveAll(kdir)
		}
	})
	ks, err := newKanmonSetup(o.kanmon, kdir, dc.IMAPAddr)
	if err != nil {
		return err
	}
	codes, err := ks.addPasscodes(append([]string{bulkUser}, users...), []string{"bench"})
	if err != nil {
		return err
	}
	secrets := secretBook{users: users, codes: codes}

	dovecotTLS := dc.TLSConfig()
	pinClientTLS(dovecotTLS)
	pinClientTLS(ks.ClientTLS)
	tg := targets{
		directPlain: target{name: "Dovecot direct", addr: dc.IMAPAddr},
		directTLS:   target{name: "Dovecot direct", addr: dc.IMAPSAddr, tls: dovecotTLS},
		kanmonPlain: target{name: "via kanmon", addr: ks.IMAPPlain},
		kanmonTLS:   target{name: "via kanmon", addr: ks.IMAPS, tls: ks.ClientTLS},
	}
	env := &benchEnv{o: o, ks: ks, dc: dc, dovecotPGID: dovecotPGID, secrets: secrets, tg: tg, rep: rep}

	if o.phases["login"] || o.phases["fetch"] {
		kp, err := ks.start("kanmon-load.log")
		if err != nil {
			return err
		}
		env.kp = kp
		if o.phases["login"] {
			if err := env.loginPhase(); err != nil {
				kp.stop()
				return err
			}
		}
		if o.phases["fetch"] {
			if err := env.fetchPhase(); err != nil {
				kp.stop()
				return err
			}
		}
		kp.stop()
	}
	if o.phases["idle"] {
		if err := env.idlePhase(); err != nil {
			return err
		}
	}
	if o.phases["reload"] {
		if err := env.reloadPhase(); err != nil {
			return err
		}
	}
	rep.addf("- whole run: %v; load average (1 min) at the end: %s", time.Since(start).Round(time.Second), loadAvg())
	text := rep.String()
	fmt.Print(text)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// secretBook holds the login secrets: users' Dovecot passwords and their
// kanmon passcodes.
type secretBook struct {
	users []string
	codes map[string]string
}

func (s secretBook) password(user string) string { return "pw-" + user }
func (s secretBook) passcode(user, app string) string {
	return s.codes[user+"/"+app]
}

type targets struct {
	directPlain, directTLS, kanmonPlain, kanmonTLS target
}

type benchEnv struct {
	o           options
	ks          *kanmonSetup
	kp          *kanmonProc
	dc          *dovecottest.Server
	dovecotPGID int
	secrets     secretBook
	tg          targets
	rep         *report
}

// secretFor returns the secret a target expects for user: the password
// at Dovecot, the passcode for app at kanmon.
func (e *benchEnv) secretFor(t target, user, app string) string {
	if strings.HasPrefix(t.name, "Dovecot") {
		return e.secrets.password(user)
	}
	return e.secrets.passcode(user, app)
}

// dovecotPID finds the Dovecot master: the process group leader whose
// command line names the instance's config.
func dovecotPID(dc *dovecottest.Server) int {
	want := filepath.Join(dc.Dir, "dovecot.conf")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && strings.HasSuffix(args[0], "dovecot") && strings.Contains(string(b), want) {
			return pid
		}
	}
	return 0
}

func dovecotVersion() string {
	p, ok := dovecottest.Available()
	if !ok {
		return "?"
	}
	out, err := execOutput(p, "--version")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(out)
}
