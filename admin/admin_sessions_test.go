package admin

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
)

func TestSessionsAndLastUseRoundTrip(t *testing.T) {
	dir := t.TempDir()
	since := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	sessions := []Session{{User: "alice", Protocol: "imap", ClientIP: "192.0.2.1", Method: "passcode", App: "Thunderbird", Client: "Thunderbird 128", Since: since, BytesIn: 10, BytesOut: 20}}
	uses := map[string]auth.LastUse{"0123456789abcdef": {User: "alice", App: "Thunderbird", Time: since, ClientIP: "192.0.2.1", Protocol: "imap"}}
	srv, err := Listen(dir, Handlers{
		Sessions: func() ([]Session, error) { return sessions, nil },
		LastUse:  func() (map[string]auth.LastUse, error) { return uses, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := NewClient(dir)
	got, err := c.Sessions()
	if err != nil || !reflect.DeepEqual(got, sessions) {
		t.Fatalf("Sessions: %+v %v", got, err)
	}
	gotUses, err := c.LastUse()
	if err != nil || !reflect.DeepEqual(gotUses, uses) {
		t.Fatalf("LastUse: %+v %v", gotUses, err)
	}
}

func TestSessionsEmptyAndMissing(t *testing.T) {
	dir := t.TempDir()
	srv, err := Listen(dir, Handlers{
		Sessions: func() ([]Session, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := NewClient(dir)
	if got, err := c.Sessions(); err != nil || len(got) != 0 {
		t.Fatalf("no sessions: %+v %v", got, err)
	}
	if _, err := c.LastUse(); err == nil {
		t.Fatal("a server without last use should answer an error")
	}
}

func TestSessionsOfNodesAndPartialAnswer(t *testing.T) {
	dir := t.TempDir()
	since := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	sessions := []Session{
		{Node: "node-a", User: "alice", Protocol: "imap", ClientIP: "192.0.2.1", Method: "passcode", Since: since},
	}
	var fail error
	srv, err := Listen(dir, Handlers{
		Sessions: func() ([]Session, error) { return sessions, fail },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := NewClient(dir)
	got, warning, err := c.SessionsWithWarning()
	if err != nil || warning != "" || !reflect.DeepEqual(got, sessions) {
		t.Fatalf("sessions of nodes: %+v %q %v", got, warning, err)
	}

	// A partial answer is served, with its warning.
	fail = &PartialError{Err: errors.New("the other nodes' sessions are missing")}
	got, warning, err = c.SessionsWithWarning()
	if err != nil || warning != "the other nodes' sessions are missing" || !reflect.DeepEqual(got, sessions) {
		t.Fatalf("partial: %+v %q %v", got, warning, err)
	}
	if got, err := c.Sessions(); err != nil || len(got) != 1 {
		t.Fatalf("Sessions of a partial answer: %+v %v", got, err)
	}

	// Any other error fails the answer.
	fail = errors.New("registry on fire")
	if _, _, err := c.SessionsWithWarning(); err == nil || err.Error() != "registry on fire" {
		t.Fatalf("failure: %v", err)
	}
}
