//go:build unix

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/redistest"
	"github.com/kanmon-mail/kanmon/otp"
)

// `kanmon serve` with [portal] and [redis]: the portal keeps its
// sessions and its TOTP replay guard in Redis (startPortal's wiring): the
// signed-in session is the record named by the SHA-256 of the cookie, and
// the enrollment code's step is the user's last step; nothing in Redis
// holds the cookie or the TOTP key.
func TestServePortalRedis(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	_, b, _ := signInPortal(t, fmt.Sprintf("[redis]\nurl = %q\nnode = \"portal-test\"\n", r.URL()))
	token := b.cookie("__Host-kanmon_portal")
	if token == "" {
		t.Fatal("no session cookie after sign-in")
	}
	key, secret := startEnrollment(t, b)
	b.post("/2fa/enroll", "code", otp.Code(secret, time.Now()))

	ctx := context.Background()
	rc := r.Client(t)
	h := sha256.Sum256([]byte(token))
	if n, err := rc.Exists(ctx, "kanmon:{p}:s:"+hex.EncodeToString(h[:])).Result(); n != 1 || err != nil {
		t.Errorf("no session record in Redis: %d, %v", n, err)
	}
	if step, err := rc.Get(ctx, "kanmon:{p}:t:carol").Int64(); err != nil || step != otp.Step(time.Now()) && step != otp.Step(time.Now())-1 {
		t.Errorf("last TOTP step in Redis: %d, %v", step, err)
	}
	keys, err := rc.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		v, _ := rc.Dump(ctx, k).Result()
		for _, secret := range []string{token, strings.ReplaceAll(key, " ", ""), carolPortalPW} {
			if strings.Contains(k+v, secret) {
				t.Errorf("Redis key %s holds a secret", k)
			}
		}
	}
}
