package proxy_test

// The password-client records (issue 16): a 2FA account's login refused
// for presenting a secret that is not a passcode notes a ClientRefused
// sighting, a passthrough success notes a ClientPassword one, and a
// passcode success makes the keeper forget the client's refused rows.
// kanmontest.Start has no way to pass ServerOptions.Clients, so these
// tests start the server themselves from kanmontest's files, in front of
// the same in-process backends as the other tests (memimap, fakePOP3, the
// go-smtp backend), with a keeper that records its calls (fakeClients) or
// the real bbolt ClientStore.

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/config"
	"github.com/kanmon-mail/kanmon/internal/kanmontest"
	"github.com/kanmon-mail/kanmon/internal/syncbuf"
	"github.com/kanmon-mail/kanmon/proxy"
)

// clientCall is one call a keeper got: Seen (kind set) or Forget.
type clientCall struct {
	forget bool
	kind   auth.ClientKind // 0 for a Forget
	user   string
	c      auth.PasswordClient
}

func (c clientCall) String() string {
	op := "Seen(" + c.kind.String()
	if c.forget {
		op = "Forget("
	}
	return op + ", " + c.user + ", " + strconv.Quote(c.c.Protocol) + " " + strconv.Quote(c.c.Name) + " " +
		strconv.Quote(c.c.Version) + " " + strconv.Quote(c.c.IP) + ")"
}

// fakeClients is an auth.ClientKeeper that records every Seen and Forget.
type fakeClients struct {
	mu    sync.Mutex
	calls []clientCall
}

var _ auth.ClientKeeper = (*fakeClients)(nil)

func (f *fakeClients) Seen(kind auth.ClientKind, user string, c auth.PasswordClient) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, clientCall{kind: kind, user: user, c: c})
}

func (f *fakeClients) Forget(user string, c auth.PasswordClient) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, clientCall{forget: true, user: user, c: c})
}

func (f *fakeClients) Clients(auth.ClientKind, string) ([]auth.PasswordClient, error) {
	return nil, nil
}

func (f *fakeClients) Accounts(auth.ClientKind, time.Time) (map[string][]auth.PasswordClient, error) {
	return nil, nil
}

// take returns the calls so far and forgets them.
func (f *fakeClients) take() []clientCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	calls := f.calls
	f.calls = nil
	return calls
}

// clientsOptions adjust startClientsWorld.
type clientsOptions struct {
	// keeper makes ServerOptions.Clients from the server's last-use
	// store; nil leaves it nil.
	keeper func(*auth.LastUseStore) auth.ClientKeeper
	// lockout is the [lockout] body; "" is kanmontest.DefaultLockout.
	lockout string
	// users is the [users] body; "" is none.
	users string
}

// clientsWorld is kanmon's plain listener of one protocol, in front of
// that protocol's in-process backend, with alice (2FA, one passcode) and
// carol (no 2FA), and ServerOptions.Clients as the options say.
type clientsWorld struct {
	f        front
	addr     string // the plain listener
	passcode string // alice's passcode
	srv      *proxy.Server
	lastUse  *auth.LastUseStore
	logs     *syncbuf.Buffer
	asked    func() int64 // backend logins (see frontWorld.asked)
}

// keep is a clientsOptions.keeper that always gives k.
func keep(k auth.ClientKeeper) func(*auth.LastUseStore) auth.ClientKeeper {
	return func(*auth.LastUseStore) auth.ClientKeeper { return k }
}

// startClientsWorld serves f's protocol as kanmontest.Start does, with
// ServerOptions.Clients from o, and stops it at cleanup.
func startClientsWorld(t *testing.T, f front, o clientsOptions) *clientsWorld {
	t.Helper()
	opts := kanmontest.Options{
		MasterUser: masterUser, MasterPassword: masterPW,
		Passcodes: map[string][]string{"alice": {app}},
		Listeners: []string{config.TLSNone},
		Lockout:   o.lockout, Users: o.users,
	}
	w := &clientsWorld{f: f, logs: &syncbuf.Buffer{}}
	switch f.proto {
	case protoIMAP:
		_, memAddr := kanmontest.StartMemIMAP(t, masterUser, masterPW, map[string]string{"alice": alicePW, "carol": carolPW})
		fwd := startTCPServer(t, forwardTo(memAddr))
		opts.IMAPBackend, w.asked = fwd.addr, fwd.accepts.Load
	case protoPOP3:
		be := startTCPServer(t, newFakePOP3().serve)
		opts.POP3Backend, w.asked = be.addr, be.accepts.Load
	default:
		be := startSMTPBackend(t)
		opts.SubmissionBackend, w.asked = be.addr, be.auths.Load
	}
	files := kanmontest.WriteFiles(t, opts)
	w.passcode = files.Passcode("alice", app)
	cfg, err := config.Load(files.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := proxy.LoadGeneration(cfg)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := proxy.OpenLockout(rt)
	if err != nil {
		t.Fatal(err)
	}
	if w.lastUse, err = auth.OpenLastUse(filepath.Join(cfg.StateDir, auth.LastUseDBName), 0); err != nil {
		t.Fatal(err)
	}
	var keeper auth.ClientKeeper
	if o.keeper != nil {
		keeper = o.keeper(w.lastUse)
	}
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.srv = proxy.NewServer(log, rt, proxy.ServerOptions{Lockout: guard, LastUse: w.lastUse, Clients: keeper})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, spec := range cfg.Listeners {
		// A port of our own: the one in the config was released again.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if spec.Protocol == f.proto && spec.TLS == config.TLSNone {
			w.addr = ln.Addr().String()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = w.srv.Serve(ctx, ln, spec)
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		w.srv.CloseSessions()
		w.srv.Wait()
		_ = guard.Close()
		_ = w.lastUse.Close()
		if t.Failed() {
			t.Logf("kanmon log:\n%s", w.logs.String())
		}
	})
	if w.addr == "" {
		t.Fatalf("no plain %s listener", f.proto)
	}
	return w
}

// open connects from ip (a 127/8 address), reads the greeting and lets
// intro name the client.
func (w *clientsWorld) open(t *testing.T, ip string, intro func(c *conv)) *conv {
	t.Helper()
	c := newConv(t, dialFrom(t, ip, w.addr))
	c.run(w.f.greeting)
	intro(c)
	return c
}

// wantLog fails unless the log holds want n times or more.
func (w *clientsWorld) wantLog(t *testing.T, want string, n int) {
	t.Helper()
	if got := strings.Count(w.logs.String(), want); got < n {
		t.Errorf("the log holds %q %d times, want at least %d", want, got, n)
	}
}

// How a client names itself before its login.
var (
	// noIntro: POP3 has no way to.
	noIntro = func(*conv) {}
	// thunderbirdID is IMAP ID with a name and a version.
	thunderbirdID = imapID(`("name" "Thunderbird" "version" "115.0")`)
)

// imapID says ID with list (the raw argument) and reads the reply.
func imapID(list string) func(c *conv) {
	return func(c *conv) {
		c.t.Helper()
		c.run("C: a0 ID "+list, "S: * ID NIL", "S: a0 OK ID completed.")
	}
}

// ehlo says EHLO name and reads the reply.
func ehlo(name string) func(c *conv) {
	return func(c *conv) {
		c.t.Helper()
		c.ehlo(name)
	}
}

// helo says HELO name and reads the reply.
func helo(name string) func(c *conv) {
	return func(c *conv) {
		c.t.Helper()
		c.run("C: HELO "+name, "S: 250 ...")
	}
}

// clientIntro is a way for a client to name itself and the name and
// version the record must then hold.
type clientIntro struct {
	name          string
	intro         func(c *conv)
	wantName, ver string
}

// clientIntros are the ways a client of proto names itself; the first is
// a named one where the protocol has a way.
func clientIntros(proto string) []clientIntro {
	switch proto {
	case protoIMAP:
		return []clientIntro{
			{"ID", thunderbirdID, "Thunderbird", "115.0"},
			{"no ID", noIntro, "", ""},
			{"ID NIL", imapID("NIL"), "", ""},
			{"ID name only", imapID(`("NAME" "K-9 Mail")`), "K-9 Mail", ""},
		}
	case protoSMTP:
		return []clientIntro{
			{"EHLO", ehlo("laptop.example.org"), "laptop.example.org", ""},
			{"EHLO invalid name", ehlo("../etc"), "", ""},
			{"EHLO address literal", ehlo("[192.0.2.7]"), "[192.0.2.7]", ""},
			{"HELO", helo("laptop.example.org"), "laptop.example.org", ""},
		}
	}
	return []clientIntro{{"no name", noIntro, "", ""}}
}

// secretsIn fails if any field of any call holds one of the secrets, in
// any of the forms secretForms knows.
func secretsIn(t *testing.T, calls []clientCall, secrets ...string) {
	t.Helper()
	forms := secretForms(secrets...)
	for _, call := range calls {
		for _, field := range []string{call.user, call.c.Protocol, call.c.Name, call.c.Version, call.c.IP} {
			for _, s := range forms {
				if s != "" && strings.Contains(field, s) {
					t.Errorf("%v holds the secret %q", call, s)
				}
			}
		}
	}
}

// wantCall fails unless calls is exactly one call like want, made about
// now.
func wantCall(t *testing.T, calls []clientCall, want clientCall) {
	t.Helper()
	if len(calls) != 1 {
		t.Fatalf("got %d calls %v, want one %v", len(calls), calls, want)
	}
	got := calls[0]
	if got.forget != want.forget || got.kind != want.kind || got.user != want.user ||
		got.c.Protocol != want.c.Protocol || got.c.Name != want.c.Name || got.c.Version != want.c.Version || got.c.IP != want.c.IP {
		t.Errorf("got %v, want %v", got, want)
	}
	if d := time.Since(got.c.Last); got.c.Last.IsZero() || d < 0 || d > time.Minute {
		t.Errorf("%v: Last %v is not about now", got, got.c.Last)
	}
}

// wrongPasscode is a passcode-shaped secret that is not w's passcode.
func (w *clientsWorld) wrongPasscode() string {
	if w.passcode == "QQQQWWWWEEEERRRR" {
		return "WWWWQQQQEEEERRRR"
	}
	return "QQQQWWWWEEEERRRR"
}

// A 2FA account's login with its account password is refused with the
// uniform reply and noted as a ClientRefused sighting of the client: its
// protocol, address, and the name it gave (IMAP ID name and version, a
// valid EHLO or HELO name, nothing on POP3), whatever way the password
// came. Repeats are noted each time, when the lockout's memory of the
// wrong secret refuses them (stale) as well.
func TestClientsRefusedPassword(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		keeper := &fakeClients{}
		w := startClientsWorld(t, f, clientsOptions{keeper: keep(keeper)})
		for i, tc := range clientIntros(f.proto) {
			for j, m := range []method{byLogin, bySASLLogin, byPlainIR} {
				ip := "127.0.0." + strconv.Itoa(10+3*i+j)
				t.Run(tc.name+"/"+strconv.Itoa(int(m)), func(t *testing.T) {
					before := w.asked()
					c := w.open(t, ip, tc.intro)
					if got := f.login(c, m, "alice", alicePW); got != f.failed {
						t.Errorf("reply:\n got %q\nwant %q", got, f.failed)
					}
					c.run(f.alive...)
					if w.asked() != before {
						t.Error("the backend was asked")
					}
					calls := keeper.take()
					wantCall(t, calls, clientCall{kind: auth.ClientRefused, user: "alice",
						c: auth.PasswordClient{Protocol: f.proto, Name: tc.wantName, Version: tc.ver, IP: ip}})
					secretsIn(t, calls, alicePW, w.passcode, masterPW)
				})
			}
		}
		w.wantLog(t, `reason="`+auth.ReasonNotPasscode.String()+`"`, 1)

		t.Run("three identical attempts", func(t *testing.T) {
			named := clientIntros(f.proto)[0]
			const ip = "127.0.0.99"
			stale := `user=alice reason="` + auth.ReasonStale.String() + `"`
			before := strings.Count(w.logs.String(), stale)
			for i := range 3 {
				c := w.open(t, ip, named.intro)
				if got := f.login(c, byLogin, "alice", alicePW+"-x"); got != f.failed {
					t.Errorf("attempt %d: %q, want %q", i+1, got, f.failed)
				}
				wantCall(t, keeper.take(), clientCall{kind: auth.ClientRefused, user: "alice",
					c: auth.PasswordClient{Protocol: f.proto, Name: named.wantName, Version: named.ver, IP: ip}})
			}
			w.wantLog(t, stale, before+2) // the second and third
		})
	})
}

// The sighting is noted under a lock too: a 2FA account locked from an
// address still gets its password refused and noted there, and its right
// passcode still logs in (and forgets the client).
func TestClientsRefusedPasswordLocked(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		keeper := &fakeClients{}
		w := startClientsWorld(t, f, clientsOptions{keeper: keep(keeper),
			lockout: kanmontest.DefaultLockout + "account_ip_threshold = 2\n"})
		named := clientIntros(f.proto)[0]
		const ip = "127.0.0.42"
		want := clientCall{kind: auth.ClientRefused, user: "alice",
			c: auth.PasswordClient{Protocol: f.proto, Name: named.wantName, Version: named.ver, IP: ip}}
		for i := range 4 {
			c := w.open(t, ip, named.intro)
			if got := f.login(c, byLogin, "alice", alicePW+strconv.Itoa(i)); got != f.failed {
				t.Errorf("attempt %d: %q, want %q", i+1, got, f.failed)
			}
			wantCall(t, keeper.take(), want)
		}
		w.wantLog(t, `user=alice reason="`+auth.ReasonLockedAccountIP.String()+`"`, 1)
		c := w.open(t, ip, named.intro)
		if got := f.login(c, byLogin, "alice", w.passcode); !lineMatches(got, f.loggedIn) {
			t.Fatalf("passcode under the lock: %q", got)
		}
		want.forget, want.kind = true, 0
		calls := keeper.take()
		wantCall(t, calls, want)
		secretsIn(t, calls, alicePW, w.passcode)
	})
}

// Refusals that say nothing about a client holding the account password
// note nothing: a wrong passcode-shaped secret (no match, not "not a
// passcode"), an empty secret, a 2FA account's name kept with a domain,
// and the password of an account without 2FA, wrong or from outside the
// campus.
func TestClientsRefusedNotNoted(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		keeper := &fakeClients{}
		w := startClientsWorld(t, f, clientsOptions{keeper: keep(keeper)})
		named := clientIntros(f.proto)[0].intro
		wrong := w.wrongPasscode()
		grouped := strings.ToLower(wrong[:4] + " " + wrong[4:8] + " " + wrong[8:12] + " " + wrong[12:])
		for _, tc := range []struct {
			name, ip, user, secret string
			reason                 auth.Reason
		}{
			{"wrong passcode", "127.0.0.1", "alice", wrong, auth.ReasonNoMatch},
			{"wrong passcode grouped", "127.0.0.1", "alice", grouped, auth.ReasonNoMatch},
			{"empty secret", "127.0.0.1", "alice", "", auth.ReasonEmptySecret},
			{"2FA name with a domain", "127.0.0.1", "alice@anything.example", alicePW, auth.ReasonUnknownDomain},
			{"no 2FA, wrong password", "127.0.0.1", "carol", "not-carols-pw-3", auth.ReasonBackendRejected},
			{"no 2FA, outside", "127.0.0.9", "carol", carolPW, auth.ReasonOutside},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := w.open(t, tc.ip, named)
				if got := f.login(c, byLogin, tc.user, tc.secret); got != f.failed {
					t.Errorf("reply:\n got %q\nwant %q", got, f.failed)
				}
				w.wantLog(t, `reason="`+tc.reason.String()+`"`, 1)
				if calls := keeper.take(); len(calls) != 0 {
					t.Errorf("noted %v", calls)
				}
			})
		}
	})
}

// With [users] domains, a refused user name notes nothing, and every
// spelling of a 2FA account notes its sighting under the account's name.
func TestClientsUserNames(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		keeper := &fakeClients{}
		w := startClientsWorld(t, f, clientsOptions{keeper: keep(keeper), users: `domains = ["kyokyo-u.ac.jp"]`})
		named := clientIntros(f.proto)[0]
		for _, user := range []string{"junk@elsewhere.example", "alice@other.example"} {
			c := w.open(t, "127.0.0.1", named.intro)
			if got := f.login(c, byLogin, user, alicePW); got != f.failed {
				t.Errorf("%s: %q, want %q", user, got, f.failed)
			}
			if calls := keeper.take(); len(calls) != 0 {
				t.Errorf("%s: noted %v", user, calls)
			}
		}
		w.wantLog(t, `reason="`+auth.ReasonUserName.String()+`"`, 2)
		c := w.open(t, "127.0.0.1", named.intro)
		if got := f.login(c, byLogin, "ALICE@KYOKYO-U.AC.JP", alicePW); got != f.failed {
			t.Errorf("ALICE@KYOKYO-U.AC.JP: %q, want %q", got, f.failed)
		}
		calls := keeper.take()
		wantCall(t, calls, clientCall{kind: auth.ClientRefused, user: "alice",
			c: auth.PasswordClient{Protocol: f.proto, Name: named.wantName, Version: named.ver, IP: "127.0.0.1"}})
		secretsIn(t, calls, alicePW)
	})
}
