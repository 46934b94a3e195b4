package proxy_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

// A passthrough login of an account without 2FA is noted as a
// ClientPassword sighting, and the session goes on; a passcode login
// forgets the client's refused rows and notes no sighting.
func TestClientsLoginsNoted(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		keeper := &fakeClients{}
		w := startClientsWorld(t, f, clientsOptions{keeper: keep(keeper)})
		for _, tc := range clientIntros(f.proto) {
			t.Run(tc.name, func(t *testing.T) {
				client := auth.PasswordClient{Protocol: f.proto, Name: tc.wantName, Version: tc.ver, IP: "127.0.0.1"}

				c := w.open(t, "127.0.0.1", tc.intro)
				if got := f.login(c, byPlainIR, "carol", carolPW); !lineMatches(got, f.loggedIn) {
					t.Fatalf("carol's password: %q, want %q", got, f.loggedIn)
				}
				calls := keeper.take()
				wantCall(t, calls, clientCall{kind: auth.ClientPassword, user: "carol", c: client})
				secretsIn(t, calls, carolPW, masterPW)

				for _, secret := range []string{w.passcode, strings.ToLower(w.passcode[:8] + " " + w.passcode[8:])} {
					c = w.open(t, "127.0.0.1", tc.intro)
					if got := f.login(c, byLogin, "alice", secret); !lineMatches(got, f.loggedIn) {
						t.Fatalf("alice's passcode: %q, want %q", got, f.loggedIn)
					}
					calls = keeper.take()
					wantCall(t, calls, clientCall{forget: true, user: "alice", c: client})
					secretsIn(t, calls, w.passcode, masterPW)
				}
			})
		}
	})
}

// The IMAP ID name and version are kept as printable ASCII, bounded,
// however the client spells them; so is a long EHLO name.
func TestClientsNameSanitised(t *testing.T) {
	long := strings.Repeat("abcdefghij", 6) // 60 bytes
	for _, tc := range []struct {
		name     string
		proto    string
		intro    func(c *conv)
		wantName string
		wantVer  string
	}{
		{"ID controls in a literal", protoIMAP, func(c *conv) {
			name := "Evil\x01\x1b[31mClient\x7f\x0b"
			ver := "1.0\x08\x1b"
			c.write("a0 ID (\"name\" {" + strconv.Itoa(len(name)) + "+}\r\n" + name +
				" \"version\" {" + strconv.Itoa(len(ver)) + "+}\r\n" + ver + ")\r\n")
			c.run("S: * ID NIL", "S: a0 OK ID completed.")
		}, "Evil[31mClient", "1.0"},
		{"ID too long", protoIMAP, imapID(`("name" "` + long + `" "version" "` + long + `")`), long[:40], long[:20]},
		{"ID UTF-8 and tab", protoIMAP, imapID("(\"name\" \"Mail\u00e9\tApp \" \"version\" \" 2 \")"), "MailApp", "2"},
		{"EHLO long name", protoSMTP, ehlo(long + "." + long + ".example.org"), (long + "." + long)[:64], ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := frontFor(tc.proto)
			keeper := &fakeClients{}
			w := startClientsWorld(t, f, clientsOptions{keeper: keep(keeper)})
			c := w.open(t, "127.0.0.1", tc.intro)
			if got := f.login(c, byLogin, "alice", alicePW); got != f.failed {
				t.Errorf("reply %q, want %q", got, f.failed)
			}
			calls := keeper.take()
			wantCall(t, calls, clientCall{kind: auth.ClientRefused, user: "alice",
				c: auth.PasswordClient{Protocol: f.proto, Name: tc.wantName, Version: tc.wantVer, IP: "127.0.0.1"}})
			for _, call := range calls {
				for _, s := range []string{call.c.Name, call.c.Version} {
					for i := 0; i < len(s); i++ {
						if s[i] < 0x20 || s[i] >= 0x7f {
							t.Errorf("%v: byte %#x at %d", call, s[i], i)
						}
					}
				}
				if len(call.c.Name) > 64 || len(call.c.Version) > 32 {
					t.Errorf("%v: name or version too long", call)
				}
			}
		})
	}
}

// frontFor is the driver of proto.
func frontFor(proto string) front {
	for _, f := range fronts {
		if f.proto == proto {
			return f
		}
	}
	panic("no front " + proto)
}

// The real store (the last-use database's ClientStore) ends up with one
// refused row per client, counted, which the client's passcode login
// then forgets, and a row for each passthrough client.
func TestClientsStore(t *testing.T) {
	each(t, func(t *testing.T, f front) {
		w := startClientsWorld(t, f, clientsOptions{keeper: func(lu *auth.LastUseStore) auth.ClientKeeper { return lu.Clients() }})
		store := w.srv.Clients()
		if store == nil {
			t.Fatal("Server.Clients is nil")
		}
		named := clientIntros(f.proto)[0]
		const ip = "127.0.0.5"
		for i := range 3 {
			c := w.open(t, ip, named.intro)
			if got := f.login(c, byLogin, "alice", alicePW); got != f.failed {
				t.Errorf("attempt %d: %q, want %q", i+1, got, f.failed)
			}
		}
		rows, err := store.Clients(auth.ClientRefused, "ALICE")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].Protocol != f.proto || rows[0].Name != named.wantName ||
			rows[0].Version != named.ver || rows[0].IP != ip || rows[0].Count != 3 {
			t.Fatalf("refused rows %+v, want one of %s %q %q %s seen 3 times", rows, f.proto, named.wantName, named.ver, ip)
		}
		c := w.open(t, ip, named.intro)
		if got := f.login(c, byLogin, "alice", w.passcode); !lineMatches(got, f.loggedIn) {
			t.Fatalf("passcode: %q", got)
		}
		if rows, err = store.Clients(auth.ClientRefused, "alice"); err != nil || len(rows) != 0 {
			t.Errorf("after the passcode login: refused rows %+v, %v; want none", rows, err)
		}
		c = w.open(t, "127.0.0.1", named.intro)
		if got := f.login(c, byLogin, "carol", carolPW); !lineMatches(got, f.loggedIn) {
			t.Fatalf("carol: %q", got)
		}
		if rows, err = store.Clients(auth.ClientPassword, "carol"); err != nil || len(rows) != 1 || rows[0].IP != "127.0.0.1" || rows[0].Name != named.wantName {
			t.Errorf("password rows %+v, %v; want carol's client", rows, err)
		}
		for _, kind := range []auth.ClientKind{auth.ClientRefused, auth.ClientPassword} {
			all, err := store.Accounts(kind, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			for user, rows := range all {
				secretsIn(t, []clientCall{{user: user}}, alicePW, carolPW, w.passcode)
				for _, r := range rows {
					secretsIn(t, []clientCall{{user: user, c: r}}, alicePW, carolPW, w.passcode)
				}
			}
		}
	})
}

// Without a keeper (ServerOptions.Clients nil, or a nil *auth.ClientStore)
// every kind of login works as before.
func TestClientsNoKeeper(t *testing.T) {
	for _, k := range []struct {
		name   string
		keeper func(*auth.LastUseStore) auth.ClientKeeper
	}{
		{"nil", nil},
		{"nil ClientStore", keep((*auth.ClientStore)(nil))},
	} {
		t.Run(k.name, func(t *testing.T) {
			each(t, func(t *testing.T, f front) {
				w := startClientsWorld(t, f, clientsOptions{keeper: k.keeper})
				if w.srv.Clients() != nil {
					t.Errorf("Server.Clients is %v, want nil", w.srv.Clients())
				}
				named := clientIntros(f.proto)[0].intro
				for _, tc := range []struct {
					user, secret string
					ok           bool
				}{
					{"alice", alicePW, false},
					{"alice", w.passcode, true},
					{"carol", carolPW, true},
					{"carol", "not-carols-pw-3", false},
				} {
					c := w.open(t, "127.0.0.1", named)
					got := f.login(c, byLogin, tc.user, tc.secret)
					if tc.ok && !lineMatches(got, f.loggedIn) || !tc.ok && got != f.failed {
						t.Errorf("%s: %q", tc.user, got)
					}
				}
			})
		})
	}
}
