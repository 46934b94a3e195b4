package portal

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kanmon-mail/kanmon/internal/userkey"
)

// SharedSessions keeps the portal's session records for several portal
// nodes behind one load balancer, so that a session made on one node
// works on every other (redisstate.PortalSessions keeps them in Redis).
//
// The store never sees a session token, nor anything of a session in
// clear: a record is named by the hex SHA-256 of its token (id below),
// and is the whole session sealed with AES-256-GCM under a key derived
// from the token (sealRecord). Only the browser holding the cookie can
// name a record and open it; a copy of the store (a dump, a replica, a
// snooped connection) gives neither a usable session, nor its CSRF
// token, a pending TOTP secret, new one-time codes or a new app passcode.
//
// user is the case-folded account name (userkey.Fold): each user's
// records are listed in an index, so that DeleteOthers finds them.
// Methods return an error when the store does not answer; the portal then
// refuses, closed.
type SharedSessions interface {
	// Ping reports whether the store answers now.
	Ping(ctx context.Context) error
	// Load returns the record id, or nil (and a nil error) when there is
	// none (never made, deleted or expired).
	Load(ctx context.Context, id string) ([]byte, error)
	// Create stores rec as the record id of user, expiring after ttl.
	// When user has perUser records or more, the ones that expire soonest
	// go first, so that user keeps perUser at most, the new one included.
	Create(ctx context.Context, user, id string, rec []byte, ttl time.Duration, perUser int) error
	// Swap replaces the record id of user by rec, expiring after ttl,
	// only if it still is old (compare and swap: a session deleted or
	// changed meanwhile, on any node, is left as it is); false when it
	// was not.
	Swap(ctx context.Context, user, id string, old, rec []byte, ttl time.Duration) (bool, error)
	// Delete removes the record id.
	Delete(ctx context.Context, id string) error
	// DeleteOthers removes every record of user but keep, and returns
	// how many it removed.
	DeleteOthers(ctx context.Context, user, keep string) (int, error)
}

// sealLabel is the message of the HMAC that derives a record's sealing
// key from its session token.
const sealLabel = "kanmon portal session seal"

// recordVersion starts every sealed record.
const recordVersion = 1

// maxSwapTries bounds the compare-and-swap rounds of one change to a
// shared session that other requests keep changing.
const maxSwapTries = 4

// errSessionsUnavailable wraps the shared store's errors.
var errSessionsUnavailable = errors.New("portal sessions unavailable")

// sharedSessions is the sessionKeeper of several nodes: sealed records in
// a SharedSessions store. Lifetimes are checked here, on this node's
// clock, and also given to the store as the record's TTL (the sooner of
// the idle and the absolute expiry), so that the store forgets a session
// when it ends. A store command is bounded by the store's own timeouts
// and does not end with the client (context.Background), as a sign-in's
// checks do not.
type sharedSessions struct {
	kv        SharedSessions
	idle, max time.Duration
	now       func() time.Time
}

// sessionRecord is a session as it is sealed into a record.
type sessionRecord struct {
	User         string    `json:"user"`
	SecondFactor bool      `json:"second_factor,omitempty"`
	CSRF         string    `json:"csrf"`
	Created      time.Time `json:"created"`
	Seen         time.Time `json:"seen"`
	Pending      []byte    `json:"pending,omitempty"`
	PendingName  string    `json:"pending_name,omitempty"`
	PendingAdd   bool      `json:"pending_add,omitempty"`
	Codes        []string  `json:"codes,omitempty"`
	ShownApp     string    `json:"shown_app,omitempty"`
	ShownCode    string    `json:"shown_code,omitempty"`
	FlashKey     string    `json:"flash_key,omitempty"`
	FlashArg     string    `json:"flash_arg,omitempty"`
	FlashErr     bool      `json:"flash_err,omitempty"`
}

// recordID names the record of a session token: the hex SHA-256 of the
// token, from which the token cannot be found.
func recordID(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// recordAEAD is the AES-256-GCM of token's records. Its key is
// HMAC-SHA256(token, sealLabel): the token is 256 random bits that only
// the browser's cookie holds, and neither the record's id (a hash of the
// token) nor the record itself tell it, so the key is nowhere but in the
// browser's request.
func recordAEAD(token string) (cipher.AEAD, error) {
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte(sealLabel))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealRecord encodes sess and seals it for token: recordVersion, a random
// nonce, then the ciphertext, with the record's id as additional data (a
// record moved under another id does not open).
func sealRecord(token string, sess *session) ([]byte, error) {
	rec := sessionRecord{
		User: sess.user, SecondFactor: sess.secondFactor, CSRF: sess.csrf, Created: sess.created, Seen: sess.seen,
		Pending: sess.pending, PendingName: sess.pendingName, PendingAdd: sess.pendingAdd, Codes: sess.codes,
		FlashKey: sess.flash.key, FlashArg: sess.flash.arg, FlashErr: sess.flash.err,
	}
	if sess.shown != nil {
		rec.ShownApp, rec.ShownCode = sess.shown.app, sess.shown.code
	}
	plain, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	aead, err := recordAEAD(token)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plain)+aead.Overhead())
	out[0] = recordVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:], plain, []byte(recordID(token))), nil
}

// openRecord opens a record sealed for token.
func openRecord(token string, b []byte) (session, error) {
	aead, err := recordAEAD(token)
	if err != nil {
		return session{}, err
	}
	if len(b) < 1+aead.NonceSize() || b[0] != recordVersion {
		return session{}, errors.New("session record: unknown format")
	}
	plain, err := aead.Open(nil, b[1:1+aead.NonceSize()], b[1+aead.NonceSize():], []byte(recordID(token)))
	if err != nil {
		return session{}, fmt.Errorf("session record: %w", err)
	}
	defer clear(plain)
	var rec sessionRecord
	if err := json.Unmarshal(plain, &rec); err != nil {
		return session{}, fmt.Errorf("session record: %w", err)
	}
	sess := session{
		user: rec.User, secondFactor: rec.SecondFactor, csrf: rec.CSRF, created: rec.Created, seen: rec.Seen,
		pending: rec.Pending, pendingName: rec.PendingName, pendingAdd: rec.PendingAdd, codes: rec.Codes,
		flash: flash{key: rec.FlashKey, arg: rec.FlashArg, err: rec.FlashErr},
	}
	if rec.ShownCode != "" {
		sess.shown = &shownPasscode{app: rec.ShownApp, code: rec.ShownCode}
	}
	return sess, nil
}

// ttl is how long sess has to live at now: the sooner of its idle and
// absolute expiry; zero or less when it has expired.
func (sh *sharedSessions) ttl(sess *session, now time.Time) time.Duration {
	return min(sess.seen.Add(sh.idle).Sub(now), sess.created.Add(sh.max).Sub(now))
}

func unavailable(err error) error { return fmt.Errorf("%w: %w", errSessionsUnavailable, err) }

// change loads the live session with token, runs fn on it (touch: also
// marks it used now) and swaps it back, again while another request
// changes it meanwhile; ok is false when there is no live session. A
// record that does not open (never sealed for this token) is no session.
func (sh *sharedSessions) change(token string, touch bool, fn func(*session)) (sess session, ok bool, err error) {
	if token == "" {
		return session{}, false, nil
	}
	ctx := context.Background()
	id := recordID(token)
	for range maxSwapTries {
		old, err := sh.kv.Load(ctx, id)
		if err != nil {
			return session{}, false, unavailable(err)
		}
		if old == nil {
			return session{}, false, nil
		}
		sess, err = openRecord(token, old)
		if err != nil {
			return session{}, false, nil
		}
		now := sh.now()
		if sh.ttl(&sess, now) <= 0 {
			if err := sh.kv.Delete(ctx, id); err != nil {
				return session{}, false, unavailable(err)
			}
			return session{}, false, nil
		}
		if touch {
			sess.seen = now
		}
		if fn != nil {
			fn(&sess)
		}
		rec, err := sealRecord(token, &sess)
		if err != nil {
			return session{}, false, err
		}
		swapped, err := sh.kv.Swap(ctx, userkey.Fold(sess.user), id, old, rec, sh.ttl(&sess, now))
		if err != nil {
			return session{}, false, unavailable(err)
		}
		if swapped {
			return sess, true, nil
		}
	}
	return session{}, false, unavailable(errors.New("the session kept changing"))
}

func (sh *sharedSessions) get(token string) (session, bool, error) {
	return sh.change(token, true, nil)
}

func (sh *sharedSessions) update(token string, fn func(*session)) (bool, error) {
	_, ok, err := sh.change(token, false, fn)
	return ok, err
}

func (sh *sharedSessions) create(user string, secondFactor bool) (string, session, error) {
	token, err := randomToken()
	if err != nil {
		return "", session{}, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", session{}, err
	}
	now := sh.now()
	sess := session{user: user, secondFactor: secondFactor, csrf: csrf, created: now, seen: now}
	rec, err := sealRecord(token, &sess)
	if err != nil {
		return "", session{}, err
	}
	if err := sh.kv.Create(context.Background(), userkey.Fold(user), recordID(token), rec, sh.ttl(&sess, now), maxSessionsPerUser); err != nil {
		return "", session{}, unavailable(err)
	}
	return token, sess, nil
}

func (sh *sharedSessions) remove(token string) error {
	if token == "" {
		return nil
	}
	if err := sh.kv.Delete(context.Background(), recordID(token)); err != nil {
		return unavailable(err)
	}
	return nil
}

func (sh *sharedSessions) removeOthers(user, token string) (int, error) {
	n, err := sh.kv.DeleteOthers(context.Background(), userkey.Fold(user), recordID(token))
	if err != nil {
		return 0, unavailable(err)
	}
	return n, nil
}

func (sh *sharedSessions) ready() error {
	if err := sh.kv.Ping(context.Background()); err != nil {
		return unavailable(err)
	}
	return nil
}
