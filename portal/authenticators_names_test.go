package portal_test

import (
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/otp"
	"github.com/kanmon-mail/kanmon/portal"
)

// The first enrollment names the authenticator from the form, trimmed; an
// empty name is the localized default, which the field also shows.
func TestEnrollmentNamesAuthenticator(t *testing.T) {
	cases := []struct {
		name, lang string
		fields     url.Values // besides the code
		want       string
	}{
		{"named", "", form("name", "iPhone 15"), "iPhone 15"},
		{"trimmed", "", form("name", "  Pixel 8  "), "Pixel 8"},
		{"empty", "", form("name", ""), "Phone"},
		{"blank", "", form("name", "   "), "Phone"},
		{"no field", "", form(), "Phone"},
		{"Japanese, empty", "ja", form("name", ""), "スマートフォン"},
		{"Japanese, named", "ja", form("name", "私のiPhone"), "私のiPhone"},
		{"64 characters", "", form("name", strings.Repeat("あ", 64)), strings.Repeat("あ", 64)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			c := w.client(inside)
			c.lang = tc.lang
			c.signIn("carol", carolPW, "").wantRedirect("/account")
			c.get("/account")
			def := map[string]string{"": "Phone", "ja": "スマートフォン"}[tc.lang]
			page := c.follow(c.post("/2fa/start", nil)).want(http.StatusOK, `id="enroll-name"`, `value="`+def+`"`).lacks(`id="enroll-adding"`)
			f := url.Values{"code": {otp.Code(page.key(), w.now())}}
			for k, vs := range tc.fields {
				f[k] = vs
			}
			c.post("/2fa/enroll", f).wantRedirect("/2fa/codes")
			w.wantAuthenticators("carol", tc.want)
			if got := c.get("/account").want(http.StatusOK).authenticatorRows(); !reflect.DeepEqual(got, []string{tc.want}) {
				t.Errorf("#authenticators rows %q", got)
			}
		})
	}
}

// A name the accounts file would refuse shows the enrollment page again,
// with the error and the same key; the code is not spent.
func TestEnrollmentBadName(t *testing.T) {
	cases := []struct{ name, lang, field, wantErr string }{
		{"65 characters", "", strings.Repeat("x", 65), badNameText},
		{"65 Japanese characters", "ja", strings.Repeat("あ", 65), "名前は64文字以内で入力してください。"},
		{"control character", "", "my\tphone", badNameText},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			c := w.client(inside)
			c.lang = tc.lang
			c.signIn("carol", carolPW, "").wantRedirect("/account")
			c.get("/account")
			page := c.follow(c.post("/2fa/start", nil)).want(http.StatusOK)
			key := page.text("totp-key")
			code := otp.Code(page.key(), w.now())
			again := c.post("/2fa/enroll", form("name", tc.field, "code", code)).want(http.StatusOK, `id="enroll-name"`)
			if got := again.text("error"); got != tc.wantErr {
				t.Errorf("error %q, want %q", got, tc.wantErr)
			}
			if got := again.text("totp-key"); got != key {
				t.Errorf("key %q, want the same %q", got, key)
			}
			if strings.Contains(w.accounts(), "carol") {
				t.Fatal("enrolled with a bad name")
			}
			c.post("/2fa/enroll", form("name", "Pixel", "code", code)).wantRedirect("/2fa/codes")
			w.wantAuthenticators("carol", "Pixel")
		})
	}
}

// recordedUse is one call of Options.RecordUse.
type recordedUse struct {
	id  string
	use auth.LastUse
}

// useRecorder collects the calls of Options.RecordUse.
type useRecorder struct {
	mu   sync.Mutex
	uses []recordedUse
}

func (u *useRecorder) option(o *portal.Options) {
	o.RecordUse = func(id string, use auth.LastUse) {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.uses = append(u.uses, recordedUse{id, use})
	}
}

// take returns the calls so far, and forgets them.
func (u *useRecorder) take() []recordedUse {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := u.uses
	u.uses = nil
	return out
}

// A code from an authenticator notes its use, under its ID: a sign-in
// with the second one's code records that one, named, from the client's
// address, for the portal (and the account's spelling of the user); the
// code that allowed adding it records the first. A one-time code is no
// authenticator's. The account page shows each one's last use.
func TestAuthenticatorUseRecorded(t *testing.T) {
	rec := &useRecorder{}
	w, c, phone, codes := enrolledAlice(t, rec.option)
	if got := rec.take(); len(got) != 0 {
		t.Errorf("the enrollment recorded %+v", got)
	}
	ipad := c.addAuthenticator("iPad", otp.Code(phone, w.now()))
	st := w.status("alice")
	if len(st.Authenticators) != 2 || st.Authenticators[0].Name != "Phone" || st.Authenticators[1].Name != "iPad" {
		t.Fatalf("authenticators %+v", st.Authenticators)
	}
	phoneID, ipadID := st.Authenticators[0].ID, st.Authenticators[1].ID
	if phoneID == "" || ipadID == "" || phoneID == ipadID {
		t.Fatalf("IDs %q and %q", phoneID, ipadID)
	}
	wantUses(t, "the add form", rec.take(), recordedUse{phoneID, auth.LastUse{
		User: "alice", App: "Phone", Time: w.now(), ClientIP: inside, Protocol: "portal",
	}})

	w.advance(otp.Period)
	s := w.client(outside)
	s.signIn("Alice", alicePW, otp.Code(ipad, w.now())).wantRedirect("/account")
	signedIn := recordedUse{ipadID, auth.LastUse{User: "alice", App: "iPad", Time: w.now(), ClientIP: outside, Protocol: "portal"}}
	wantUses(t, "the sign-in", rec.take(), signedIn)
	w.wantLog("second_factor=totp authenticator=iPad")

	w.client(outside).signIn("alice", alicePW, codes[0]).wantRedirect("/account")
	wantUses(t, "a one-time code", rec.take())

	// The account page reads the last use back by ID.
	w.lastUse.Store(&map[string]auth.LastUse{ipadID: signedIn.use})
	r := c.get("/account").want(http.StatusOK)
	if row := r.row("iPad"); !strings.Contains(row, signedIn.use.Time.Local().Format(pageTimeLayout)) || !strings.Contains(row, outside) {
		t.Errorf("iPad's row lacks its last use:\n%s", row)
	}
	if row := r.row("Phone"); !strings.Contains(row, "Never") {
		t.Errorf("Phone's row:\n%s", row)
	}
}

// wantUses compares recorded uses, times by Equal.
func wantUses(t *testing.T, when string, got []recordedUse, want ...recordedUse) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: recorded %+v, want %+v", when, got, want)
	}
	for i := range got {
		g, x := got[i], want[i]
		if !g.use.Time.Equal(x.use.Time) {
			t.Errorf("%s: use %d at %v, want %v", when, i, g.use.Time, x.use.Time)
		}
		g.use.Time, x.use.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(g, x) {
			t.Errorf("%s: use %d is %+v, want %+v", when, i, g, x)
		}
	}
}

// The authenticator pages and messages in Japanese.
func TestAuthenticatorsJapanese(t *testing.T) {
	w, c, phone, _ := enrolledAlice(t)
	c.lang = "ja"
	c.get("/account").want(http.StatusOK, "認証アプリを追加", "新しい端末の名前", "登録されている認証アプリはこれだけです。")
	page := c.startAdd("iPad", otp.Code(phone, w.now()))
	if got := page.text("enroll-adding"); got != "認証アプリ「iPad」を追加します。" {
		t.Errorf("#enroll-adding = %q", got)
	}
	c.post("/2fa/enroll", form("code", otp.Code(page.key(), w.now()))).wantRedirect("/account")
	if got := c.get("/account").text("notice"); got != "認証アプリ「iPad」を追加しました。このアプリのコードでもサインインできます。" {
		t.Errorf("notice %q", got)
	}
	c.post("/2fa/authenticators/add", form("name", "ipad", "code", otp.Code(phone, w.now()))).wantRedirect("/account")
	if got := c.get("/account").text("error"); got != "「iPad」という名前の認証アプリはすでに登録されています。別の名前にしてください。" {
		t.Errorf("error %q", got)
	}
}
