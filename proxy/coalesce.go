package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"github.com/kanmon-mail/kanmon/proxy/backend"
)

// Identical passthrough attempts in flight at once share one backend
// login. Thunderbird opens several IMAP connections at once, each with
// the same stored password; when that password is stale, every one of
// them would reach the backend before the first failure is recorded, and
// a backend whose own lockout counts five failures (Zimbra, Active
// Directory) would lock the real user out. So the first attempt of an
// (account, secret) pair asks the backend, and the others wait for its
// answer: a definite "wrong password" is theirs too; anything else (a
// success, which opens a session for the first connection only, or a
// temporary failure) sends each on to its own backend login.
//
// The pair is keyed by HMAC-SHA256 with the pepper, so the table holds no
// secret. A different secret is a different key: a right password never
// waits behind a wrong one. The passcode path never comes here.

// flightLinger keeps a finished attempt's "wrong password" for attempts
// that checked the lockout's stale memory just before the first one
// recorded it, so that they too share it instead of asking again.
const flightLinger = 2 * time.Second

// loginFlights are the passthrough attempts in flight, by key. The zero
// value is ready.
type loginFlights struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*loginFlight
}

// loginFlight is one backend attempt that identical attempts wait for.
type loginFlight struct {
	done chan struct{} // closed once the answer is in
	// rejected is the answer: the backend refused the credentials.
	rejected bool
}

// flightKey keys user's attempt with secret.
func flightKey(pepper []byte, user, secret string) [sha256.Size]byte {
	m := hmac.New(sha256.New, pepper)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(secret))
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// join returns the attempt in flight for key, or, when there is none,
// starts one: lead is then true, and the caller must end it with land.
func (fs *loginFlights) join(key [sha256.Size]byte) (f *loginFlight, lead bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := fs.m[key]; f != nil {
		return f, false
	}
	if fs.m == nil {
		fs.m = map[[sha256.Size]byte]*loginFlight{}
	}
	f = &loginFlight{done: make(chan struct{})}
	fs.m[key] = f
	return f, true
}

// land gives the waiting attempts the answer. A rejection stays for
// flightLinger, anything else leaves at once.
func (fs *loginFlights) land(key [sha256.Size]byte, f *loginFlight, rejected bool) {
	f.rejected = rejected
	close(f.done)
	drop := func() {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		if fs.m[key] == f {
			delete(fs.m, key)
		}
	}
	if rejected {
		time.AfterFunc(flightLinger, drop)
		return
	}
	drop()
}

// wait waits for f's answer and reports whether the backend rejected the
// credentials; ok is false when ctx ended first.
func (f *loginFlight) wait(ctx context.Context) (rejected, ok bool) {
	select {
	case <-f.done:
		return f.rejected, true
	case <-ctx.Done():
		return false, false
	}
}

// passthroughLogin logs cred (a user's own password, secret) into b, one
// backend attempt for identical attempts in flight: shared is true when
// another attempt's backend rejected the same credentials, and then
// nothing was asked. After another attempt's success or temporary failure
// it logs in itself, at once, without waiting for any other.
func (s *session) passthroughLogin(ctx context.Context, b *backend.Backend, cred backend.Credentials, secret string) (login *backend.Login, shared bool, err error) {
	key := flightKey(s.rt.Pepper, cred.Authcid, secret)
	f, lead := s.srv.flights.join(key)
	if !lead {
		rejected, ok := f.wait(ctx)
		switch {
		case !ok:
			return nil, false, &backend.LoginError{Detail: "waiting for an identical login", Err: ctx.Err()}
		case rejected:
			return nil, true, nil
		}
		login, err = b.Login(ctx, cred)
		return login, false, err
	}
	rejected := false
	defer func() { s.srv.flights.land(key, f, rejected) }()
	login, err = b.Login(ctx, cred)
	var le *backend.LoginError
	rejected = errors.As(err, &le) && le.AuthFailed
	return login, false, err
}
