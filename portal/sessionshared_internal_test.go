package portal

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

// A sealed record opens to the same session with its own token only, not
// with another, and not after a change of one byte; it holds none of the
// session's secrets in clear.
func TestSealRecord(t *testing.T) {
	token, other := mustToken(t), mustToken(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	sess := session{
		user: "Alice", secondFactor: true, csrf: mustToken(t), created: now, seen: now.Add(time.Minute),
		pending: []byte("0123456789"), codes: []string{"abcde-fghij", "klmno-pqrst"},
		shown: &shownPasscode{app: "Thunderbird", code: "ABCDEFGHIJKLMNOP"},
		flash: flash{key: "passcodes.deleted", arg: "iPhone", err: true},
	}
	rec, err := sealRecord(token, &sess)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{token, sess.csrf, "0123456789", "abcde-fghij", "ABCDEFGHIJKLMNOP", "Thunderbird", "Alice"} {
		if bytes.Contains(rec, []byte(secret)) {
			t.Errorf("the record holds %q in clear", secret)
		}
	}
	got, err := openRecord(token, rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sess) {
		t.Errorf("opened %+v\nwant %+v", got, sess)
	}
	if _, err := openRecord(other, rec); err == nil {
		t.Error("a record opened with another token")
	}
	for i := range rec {
		bad := bytes.Clone(rec)
		bad[i] ^= 1
		if _, err := openRecord(token, bad); err == nil {
			t.Fatalf("a record with byte %d changed opened", i)
		}
	}
	if _, err := openRecord(token, rec[:5]); err == nil {
		t.Error("a short record opened")
	}
	again, _ := sealRecord(token, &sess)
	if bytes.Equal(again, rec) {
		t.Error("two seals of one session are equal: the nonce is not fresh")
	}
	if id := recordID(token); len(id) != 64 || id == recordID(other) {
		t.Errorf("record id %q", id)
	}
}

// A shared session lives until the sooner of its idle and absolute
// expiry.
func TestSharedTTL(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	sh := &sharedSessions{idle: 15 * time.Minute, max: 8 * time.Hour}
	for _, tc := range []struct {
		created, seen time.Time
		want          time.Duration
	}{
		{now, now, 15 * time.Minute},
		{now.Add(-time.Hour), now.Add(-5 * time.Minute), 10 * time.Minute},
		{now.Add(-8*time.Hour + 3*time.Minute), now, 3 * time.Minute},
		{now.Add(-time.Hour), now.Add(-15 * time.Minute), 0},
	} {
		sess := session{created: tc.created, seen: tc.seen}
		if got := sh.ttl(&sess, now); got != tc.want {
			t.Errorf("created %s seen %s: ttl %s, want %s", tc.created, tc.seen, got, tc.want)
		}
	}
}

func mustToken(t *testing.T) string {
	t.Helper()
	s, err := randomToken()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
