package portal

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"time"
)

const (
	// cookieName is the session cookie.
	cookieName = "kanmon_portal"
	// idBytes is the size of a session id and of a CSRF token: 256 bits
	// from crypto/rand.
	idBytes = 32
	// maxSessions caps the sessions kept in memory, signed in or not.
	// When full, expired ones go first, then the oldest of those not
	// signed in; signed-in sessions are never pushed out.
	maxSessions = 10000
	// sweepEvery is how often expired sessions are dropped.
	sweepEvery = time.Minute
)

// errTooManySessions is create's error when the store is full of
// signed-in sessions.
var errTooManySessions = errors.New("portal: too many sessions")

// session is one browser's state on the server. A session without a user
// exists from the sign-in form on, so that the sign-in POST carries a CSRF
// token too; signing in replaces it with a new one (a new id).
type session struct {
	// user is the signed-in account ("" before sign-in): the accounts
	// file's spelling for a 2FA account, else as typed.
	user string
	// csrf is the token every POST of this session must carry.
	csrf string
	// created is when the session began (sign-in, for a signed-in one);
	// seen is its last request.
	created, seen time.Time
	// pending is the TOTP secret being enrolled, kept only here until
	// the user proves it with a code.
	pending []byte
	// codes are the new one-time codes, shown until the user leaves the
	// page with Done.
	codes []string
	// shown is a new app passcode, shown until Done.
	shown *shownPasscode
	// flash is a message for the next account page.
	flash flash
}

// shownPasscode is a new passcode on its way to the user.
type shownPasscode struct{ app, code string }

// flash is a one-shot message: a catalog key and its argument.
type flash struct {
	key, arg string
	err      bool
}

// sessionStore keeps sessions in memory, by the SHA-256 of their id (so a
// map lookup's timing says nothing about the ids themselves).
type sessionStore struct {
	idle, max time.Duration
	now       func() time.Time

	mu        sync.Mutex
	m         map[[sha256.Size]byte]*session
	lastSweep time.Time
}

func newSessionStore(idle, max time.Duration, now func() time.Time) *sessionStore {
	return &sessionStore{idle: idle, max: max, now: now, m: map[[sha256.Size]byte]*session{}}
}

func idKey(id string) [sha256.Size]byte { return sha256.Sum256([]byte(id)) }

// expired reports whether sess is past its idle or absolute lifetime.
func (st *sessionStore) expired(sess *session, now time.Time) bool {
	return now.Sub(sess.seen) >= st.idle || now.Sub(sess.created) >= st.max
}

// get returns a copy of the live session with id and marks it used; ok
// is false for an unknown or expired id (an expired one is dropped).
func (st *sessionStore) get(id string) (sess session, ok bool) {
	if id == "" {
		return session{}, false
	}
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	k := idKey(id)
	p := st.m[k]
	if p == nil {
		return session{}, false
	}
	if st.expired(p, now) {
		delete(st.m, k)
		return session{}, false
	}
	p.seen = now
	return *p, true
}

// update runs fn on the live session with id; false when there is none.
func (st *sessionStore) update(id string, fn func(*session)) bool {
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	p := st.m[idKey(id)]
	if p == nil || st.expired(p, now) {
		return false
	}
	fn(p)
	return true
}

// create starts a session for user ("" for one not signed in yet) and
// returns its id.
func (st *sessionStore) create(user string) (string, session, error) {
	id, err := randomToken()
	if err != nil {
		return "", session{}, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", session{}, err
	}
	now := st.now()
	sess := &session{user: user, csrf: csrf, created: now, seen: now}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.m) >= maxSessions || now.Sub(st.lastSweep) >= sweepEvery {
		st.sweep(now)
	}
	if len(st.m) >= maxSessions && !st.evictAnonymous() {
		return "", session{}, errTooManySessions
	}
	st.m[idKey(id)] = sess
	return id, *sess, nil
}

// remove ends the session with id.
func (st *sessionStore) remove(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.m, idKey(id))
}

// len returns how many sessions are kept.
func (st *sessionStore) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}

// sweep drops expired sessions. Called with mu held.
func (st *sessionStore) sweep(now time.Time) {
	st.lastSweep = now
	for k, p := range st.m {
		if st.expired(p, now) {
			delete(st.m, k)
		}
	}
}

// evictAnonymous drops the least recently used session that is not signed
// in; false when every session is signed in. Called with mu held.
func (st *sessionStore) evictAnonymous() bool {
	var oldest [sha256.Size]byte
	var found *session
	for k, p := range st.m {
		if p.user == "" && (found == nil || p.seen.Before(found.seen)) {
			oldest, found = k, p
		}
	}
	if found == nil {
		return false
	}
	delete(st.m, oldest)
	return true
}

// randomToken returns idBytes from crypto/rand, base64url without padding.
func randomToken() (string, error) {
	b := make([]byte, idBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenLen is the length of a randomToken: 32 bytes in unpadded base64.
const tokenLen = (idBytes*8 + 5) / 6

// sessionID returns the request's session cookie when it is well-formed,
// else "".
func sessionID(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil || len(c.Value) != tokenLen {
		return ""
	}
	return c.Value
}

// validCSRF compares a form's token with the session's in constant time.
func validCSRF(want, got string) bool {
	return want != "" && len(got) == len(want) && subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// setSessionCookie gives the browser the session id: HttpOnly (no script
// reads it), Secure (HTTPS only), SameSite=Strict (no cross-site request
// carries it), and no expiry of its own (the server's lifetimes rule).
func setSessionCookie(w http.ResponseWriter, id string) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// clearSessionCookie removes the session cookie from the browser.
func clearSessionCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}
