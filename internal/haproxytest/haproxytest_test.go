//go:build linux

package haproxytest

import (
	"fmt"
	"testing"

	"github.com/kanmon-mail/kanmon/internal/testenv"
)

func TestParseStats(t *testing.T) {
	out := "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,check_status,last_chk,\n" +
		"ft_imap,FRONTEND,,,0,1,40000,3,0,0,0,0,0,,,,,OPEN,,,\n" +
		"bk_imap,node1,0,0,2,2,,5,0,0,,0,,0,0,0,0,UP,* L7OK,(tcp-check),\n" +
		"bk_imap,node2,0,0,0,1,,1,0,0,,0,,0,0,0,0,DOWN 1/2,L4CON,\"Connection refused, twice\",\n" +
		"bk_imap,node3,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,,,\n" +
		"bk_imap,BACKEND,0,0,2,2,4000,6,0,0,0,0,,0,0,0,0,UP,,,\n\n"
	got, err := parseStats(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Stat{
		{"bk_imap", "node1", "UP", "L7OK", "(tcp-check)", 2, 5},
		{"bk_imap", "node2", "DOWN 1/2", "L4CON", "Connection refused, twice", 0, 1},
		{"bk_imap", "node3", "no check", "", "", 0, 0},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseStats = %+v, want %+v", got, want)
	}
	if _, err := parseStats("Unknown command\n"); err == nil {
		t.Error("parseStats took an error message")
	}
}

func TestAtLeast(t *testing.T) {
	for v, want := range map[string]bool{"2.6.12": true, "2.4": true, "2.3.9": false, "3.0.1": true, "1.9": false, "x": false} {
		if got := atLeast(v, 2, 4); got != want {
			t.Errorf("atLeast(%q, 2, 4) = %v", v, got)
		}
	}
}

// TestUnavailable checks that a missing HAProxy skips the test, and fails it
// under CI=true.
func TestUnavailable(t *testing.T) {
	testenv.CheckUnavailable(t, haproxy)
}
