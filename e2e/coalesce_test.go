package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/internal/kanmontest"
)

// Issue 11: a mail client opens several connections at once, each with
// the same stale password. However many arrive together, Dovecot checks
// it once: the attempts in flight share the first one's answer, and the
// rest meet the stale-secret memory. A right password sent at the same
// moment is not held back by them, and logs in.
func TestE2ECoalescedStalePassword(t *testing.T) {
	for _, n := range []int{5, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			w := startWorld(t, kanmontest.Options{TrustedNetworks: []string{"127.0.0.0/8"}})
			k := w.kanmon
			conns := make([]*rawIMAP, n+1)
			for i := range conns {
				conns[i] = dialIMAPSFrom(t, k.IMAPS, k.ClientTLS, fmt.Sprintf("127.0.4.%d", 1+i))
			}
			replies := make([]string, n+1)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					pw := "carols-old-password"
					if i == n {
						pw = carolPassword // sent together with the stale ones
					}
					replies[i] = c.cmd(fmt.Sprintf("a1 LOGIN carol %q", pw))
				}()
			}
			close(start)
			wg.Wait()
			for i, r := range replies[:n] {
				wantFailed(t, fmt.Sprintf("stale password %d", i), r)
			}
			wantOK(t, "carol's right password, sent at the same time", replies[n])
			waitFor(t, 5*time.Second, "Dovecot to log carol's login", func() bool {
				return strings.Contains(w.dovecot.Log(), "Login: user=<carol>")
			})
			if got := dovecotAuthFailures(w.dovecot.Log(), "carol"); got != 1 {
				t.Errorf("Dovecot checked the stale password %d times, want 1", got)
			}
			klog := k.Logs()
			if got := countLogLines(klog, "user=carol ", "lockout.counted=true"); got != 1 {
				t.Errorf("kanmon counted %d failures, want 1", got)
			}
			shared := countLogLines(klog, "user=carol ", `reason="backend rejected the password in a concurrent identical attempt"`)
			stale := countLogLines(klog, "user=carol ", `reason="repeated stale secret"`)
			if shared+stale != n-1 {
				t.Errorf("%d attempts shared the answer and %d met the stale memory, want %d in all", shared, stale, n-1)
			}
			t.Logf("%d shared the first attempt's answer, %d met the stale-secret memory", shared, stale)
		})
	}
}
