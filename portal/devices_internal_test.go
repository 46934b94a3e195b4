package portal

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

// A sealed session record keeps the authenticator being enrolled: its
// name and whether it is one more (issue 16), as well as its secret, so
// that an add begun on one node ends on another. The name is not in
// clear.
func TestSealRecordPendingAuthenticator(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name        string
		pendingName string
		pendingAdd  bool
	}{
		{"first enrollment", "", false},
		{"one more", "iPad Pro", true},
		{"one more, Japanese name", "仕事用のiPad", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token := mustToken(t)
			sess := session{
				user: "alice", secondFactor: true, csrf: mustToken(t), created: now, seen: now.Add(time.Minute),
				pending: []byte("0123456789"), pendingName: tc.pendingName, pendingAdd: tc.pendingAdd,
			}
			rec, err := sealRecord(token, &sess)
			if err != nil {
				t.Fatal(err)
			}
			if tc.pendingName != "" && bytes.Contains(rec, []byte(tc.pendingName)) {
				t.Errorf("the record holds %q in clear", tc.pendingName)
			}
			got, err := openRecord(token, rec)
			if err != nil {
				t.Fatal(err)
			}
			if got.pendingName != tc.pendingName || got.pendingAdd != tc.pendingAdd {
				t.Errorf("opened pendingName %q pendingAdd %v, want %q %v", got.pendingName, got.pendingAdd, tc.pendingName, tc.pendingAdd)
			}
			if !reflect.DeepEqual(got, sess) {
				t.Errorf("opened %+v\nwant %+v", got, sess)
			}
		})
	}
}
