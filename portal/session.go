package portal

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/kanmon-mail/kanmon/internal/userkey"
)

const (
	// cookieName is the session cookie. The __Host- prefix makes the
	// browser accept it only from HTTPS, with Path=/ and no Domain, so
	// that no other host (a sibling subdomain) can plant or shadow it.
	cookieName = "__Host-kanmon_portal"
	// idBytes is the size of a session id and of a CSRF token: 256 bits
	// from crypto/rand.
	idBytes = 32
	// maxSessions caps the signed-in sessions kept in memory. When full,
	// the least recently used one goes (O(1)): a sign-in is never refused
	// because of other users' sessions.
	maxSessions = 10000
	// maxSessionsPerUser caps one account's signed-in sessions; a new one
	// pushes out that account's least recently used one. So one account
	// (or one stolen password) holds at most this many places in the
	// store.
	maxSessionsPerUser = 10
)

// session is one signed-in browser's state on the server. There is no
// session before sign-in: the sign-in form's CSRF protection is stateless
// (signinform.go).
type session struct {
	// user is the signed-in account: the accounts file's spelling for a
	// 2FA account, else as typed.
	user string
	// secondFactor is whether this session proved a second factor: it
	// signed in with a TOTP code or a one-time code, or it registered the
	// authenticator itself. A session that signed in with the password
	// alone (2FA was off then) may not change passcodes or turn 2FA off
	// once the account has 2FA on: it must sign in again.
	secondFactor bool
	// csrf is the token every POST of this session must carry.
	csrf string
	// created is when the session began (the sign-in); seen is its last
	// request.
	created, seen time.Time
	// pending is the TOTP secret being enrolled, kept only here until
	// the user proves it with a code.
	pending []byte
	// pendingName names the authenticator being enrolled; pendingAdd
	// says it is one more for an account that has one already, added
	// after this session typed a code from another (or a one-time
	// code), so it brings no new one-time codes.
	pendingName string
	pendingAdd  bool
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

// sessionKeeper is what the handlers need of the signed-in sessions. Two
// keep them: memorySessions, this process's memory (one node, the
// default), and sharedSessions, sealed records in a store several portal
// nodes share (Options.Sessions: Redis in cluster mode). The memory one
// never fails; a shared one fails when its store does not answer, and
// the handlers then refuse, closed, with the "unavailable" page: no
// request is served on a session that could not be read, and no sign-in
// starts while sessions cannot be kept.
type sessionKeeper interface {
	// get returns a copy of the live session with id and marks it used;
	// ok is false for an unknown or expired id.
	get(id string) (sess session, ok bool, err error)
	// update runs fn on the live session with id; false when there is
	// none.
	update(id string, fn func(*session)) (bool, error)
	// create starts a signed-in session for user, with secondFactor as
	// its proof, and returns its id.
	create(user string, secondFactor bool) (string, session, error)
	// remove ends the session with id.
	remove(id string) error
	// removeOthers ends every session of user (case-insensitive) but the
	// one with id, and returns how many it ended.
	removeOthers(user, id string) (int, error)
	// ready reports whether sessions can be kept now: a sign-in checks
	// it before the password, so that a store that is down gets the
	// "unavailable" page and not a failure after a right password.
	ready() error
}

// memorySessions is the sessionKeeper of one node: a sessionStore in
// memory. None of its methods fails.
type memorySessions struct{ st *sessionStore }

func (m memorySessions) get(id string) (session, bool, error) {
	sess, ok := m.st.get(id)
	return sess, ok, nil
}

func (m memorySessions) update(id string, fn func(*session)) (bool, error) {
	return m.st.update(id, fn), nil
}

func (m memorySessions) create(user string, secondFactor bool) (string, session, error) {
	return m.st.create(user, secondFactor)
}

func (m memorySessions) remove(id string) error { m.st.remove(id); return nil }

func (m memorySessions) removeOthers(user, id string) (int, error) {
	return m.st.removeOthers(user, id), nil
}

func (m memorySessions) ready() error { return nil }

// sessionEntry is a session in the store, with its places in the two
// recency lists.
type sessionEntry struct {
	key  [sha256.Size]byte
	fold string // userkey.Fold(sess.user)
	sess session
	// all is the entry's element in sessionStore.lru; mine its element
	// in its user's list.
	all, mine *list.Element
}

// sessionStore keeps the signed-in sessions in memory, by the SHA-256 of
// their id (so a map lookup's timing says nothing about the ids
// themselves), in a list by recency of use (front: most recent) and per
// case-folded user, also by recency.
type sessionStore struct {
	idle, max time.Duration
	now       func() time.Time

	mu     sync.Mutex
	m      map[[sha256.Size]byte]*sessionEntry
	lru    *list.List // of *sessionEntry
	byUser map[string]*list.List
}

func newSessionStore(idle, max time.Duration, now func() time.Time) *sessionStore {
	return &sessionStore{idle: idle, max: max, now: now,
		m: map[[sha256.Size]byte]*sessionEntry{}, lru: list.New(), byUser: map[string]*list.List{}}
}

func idKey(id string) [sha256.Size]byte { return sha256.Sum256([]byte(id)) }

// expired reports whether sess is past its idle or absolute lifetime.
func (st *sessionStore) expired(sess *session, now time.Time) bool {
	return now.Sub(sess.seen) >= st.idle || now.Sub(sess.created) >= st.max
}

// lookup returns the live entry for id, dropping it when expired. Called
// with mu held.
func (st *sessionStore) lookup(id string, now time.Time) *sessionEntry {
	if id == "" {
		return nil
	}
	e := st.m[idKey(id)]
	if e == nil {
		return nil
	}
	if st.expired(&e.sess, now) {
		st.drop(e)
		return nil
	}
	return e
}

// touch marks e used now: the front of both lists. Called with mu held.
func (st *sessionStore) touch(e *sessionEntry, now time.Time) {
	e.sess.seen = now
	st.lru.MoveToFront(e.all)
	st.byUser[e.fold].MoveToFront(e.mine)
}

// drop removes e. Called with mu held.
func (st *sessionStore) drop(e *sessionEntry) {
	delete(st.m, e.key)
	st.lru.Remove(e.all)
	if l := st.byUser[e.fold]; l != nil {
		l.Remove(e.mine)
		if l.Len() == 0 {
			delete(st.byUser, e.fold)
		}
	}
}

// get returns a copy of the live session with id and marks it used; ok
// is false for an unknown or expired id (an expired one is dropped).
func (st *sessionStore) get(id string) (sess session, ok bool) {
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	e := st.lookup(id, now)
	if e == nil {
		return session{}, false
	}
	st.touch(e, now)
	return e.sess, true
}

// update runs fn on the live session with id; false when there is none.
func (st *sessionStore) update(id string, fn func(*session)) bool {
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	e := st.lookup(id, now)
	if e == nil {
		return false
	}
	fn(&e.sess)
	return true
}

// create starts a signed-in session for user, with secondFactor as the
// session's proof, and returns its id. It never fails for want of room:
// the user's own least recently used session goes when the user has
// maxSessionsPerUser, the store's least recently used one when the store
// is full.
func (st *sessionStore) create(user string, secondFactor bool) (string, session, error) {
	id, err := randomToken()
	if err != nil {
		return "", session{}, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", session{}, err
	}
	now := st.now()
	e := &sessionEntry{key: idKey(id), fold: userkey.Fold(user),
		sess: session{user: user, secondFactor: secondFactor, csrf: csrf, created: now, seen: now}}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sweep(now)
	mine := st.byUser[e.fold]
	if mine == nil {
		mine = list.New()
		st.byUser[e.fold] = mine
	}
	for mine.Len() >= maxSessionsPerUser {
		st.drop(mine.Back().Value.(*sessionEntry))
	}
	for len(st.m) >= maxSessions {
		st.drop(st.lru.Back().Value.(*sessionEntry))
	}
	if st.byUser[e.fold] == nil { // drop emptied and removed it
		st.byUser[e.fold] = mine
	}
	e.all = st.lru.PushFront(e)
	e.mine = mine.PushFront(e)
	st.m[e.key] = e
	return id, e.sess, nil
}

// remove ends the session with id.
func (st *sessionStore) remove(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if e := st.m[idKey(id)]; e != nil {
		st.drop(e)
	}
}

// removeOthers ends every session of user (case-insensitive) but the one
// with id, and returns how many it ended.
func (st *sessionStore) removeOthers(user, id string) int {
	keep := idKey(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.byUser[userkey.Fold(user)]
	if l == nil {
		return 0
	}
	n := 0
	for el := l.Front(); el != nil; {
		e := el.Value.(*sessionEntry)
		el = el.Next()
		if e.key != keep {
			st.drop(e)
			n++
		}
	}
	return n
}

// len returns how many sessions are kept.
func (st *sessionStore) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}

// sweep drops the sessions that have been idle too long, from the least
// recently used end: it costs one step per session dropped plus one.
// Sessions past their absolute lifetime but recently used go at their
// next request or when they reach that end. Called with mu held.
func (st *sessionStore) sweep(now time.Time) {
	for el := st.lru.Back(); el != nil; el = st.lru.Back() {
		e := el.Value.(*sessionEntry)
		if !st.expired(&e.sess, now) {
			return
		}
		st.drop(e)
	}
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

// validCSRF compares a form's token with the expected one in constant
// time.
func validCSRF(want, got string) bool {
	return want != "" && len(got) == len(want) && subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// setSessionCookie gives the browser the session id: HttpOnly (no script
// reads it), Secure (HTTPS only), SameSite=Strict (no cross-site request
// carries it), Path=/ and no Domain (the __Host- prefix demands both),
// and no expiry of its own (the server's lifetimes rule).
func setSessionCookie(w http.ResponseWriter, id string) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// clearSessionCookie removes the session cookie from the browser.
func clearSessionCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}
