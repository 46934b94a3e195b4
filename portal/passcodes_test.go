package portal_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kanmon-mail/kanmon/auth"
	"github.com/kanmon-mail/kanmon/otp"
)

// Passcodes: added with an optional scope (shown once, with the Done
// rule), listed with their creation and last use, deleted; every change
// reloads the server, which is what ends a deleted passcode's sessions.
func TestPasscodes(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.enroll()
	c.get("/account").want(http.StatusOK, `<table id="passcodes">`, `action="/passcodes/add"`, `id="add-passcode"`,
		`name="protocols" value="imap"`, `name="protocols" value="pop3"`, `name="protocols" value="submission"`, "No app passcodes yet.")
	reloads := w.reloads.Load()

	add := c.post("/passcodes/add", form("app", "Thunderbird")).wantRedirect("/passcodes/new")
	page := c.follow(add).want(http.StatusOK, "App passcode for Thunderbird",
		"Check that the app works before pressing Done: the passcode cannot be shown again.", `id="done"`)
	grouped := page.text("passcode")
	if !regexp.MustCompile(`^[A-Z]{4} [A-Z]{4} [A-Z]{4} [A-Z]{4}$`).MatchString(grouped) {
		t.Fatalf("#passcode = %q", grouped)
	}
	if w.reloads.Load() != reloads+1 {
		t.Errorf("reloads after add: %d, want %d", w.reloads.Load(), reloads+1)
	}
	// The new passcode is in force: the policy admits it for IMAP.
	d := w.rt.Load().Policy.Decide(auth.Attempt{User: "carol", Secret: grouped, Protocol: "imap"})
	if d.Kind != auth.Passcode || d.App != "Thunderbird" {
		t.Fatalf("policy after add: %+v", d)
	}
	c.get("/passcodes/new").want(http.StatusOK, grouped) // until Done
	c.get("/account").want(http.StatusOK, `<tr data-app="Thunderbird">`, "Never").lacks(grouped)
	c.get("/passcodes/new").wantRedirect("/account")

	// A scoped one, and a duplicate name.
	c.follow(c.post("/passcodes/add", form("app", "iPhone", "protocols", "imap", "protocols", "submission"))).want(http.StatusOK)
	c.get("/account").want(http.StatusOK, `<tr data-app="iPhone">`, "IMAP, SMTP")
	c.post("/passcodes/add", form("app", "thunderbird")).wantRedirect("/account")
	if got := c.get("/account").text("error"); !strings.Contains(got, "already a passcode named Thunderbird") {
		t.Errorf("duplicate: %q", got)
	}
	c.post("/passcodes/add", form("app", "x", "protocols", "smtp")).wantRedirect("/account")
	if got := c.get("/account").text("error"); got != "Choose IMAP, POP3 or SMTP." {
		t.Errorf("bad scope: %q", got)
	}

	// Last use comes from the server's store, by passcode ID.
	accts, err := auth.LoadAccounts(w.rt.Load().Config.Accounts)
	if err != nil {
		t.Fatal(err)
	}
	pc := accts.Lookup("carol").Passcode("Thunderbird")
	used := time.Date(2026, 11, 25, 13, 14, 0, 0, time.UTC)
	w.lastUse.Store(&map[string]auth.LastUse{pc.ID(): {
		User: "carol", App: "Thunderbird", Time: used, ClientIP: "192.0.2.77", Protocol: "imap", Client: "Thunderbird 128.5",
	}})
	c.get("/account").want(http.StatusOK, used.Local().Format("2006-01-02 15:04"), "192.0.2.77", "IMAP", "Thunderbird 128.5")

	// Delete: revoked, reloaded, gone from the list and from the policy.
	reloads = w.reloads.Load()
	c.post("/passcodes/delete", form("app", "Thunderbird")).wantRedirect("/account")
	r := c.get("/account").lacks(`data-app="Thunderbird"`)
	if got := r.text("notice"); !strings.Contains(got, "Thunderbird was deleted") {
		t.Errorf("notice: %q", got)
	}
	if w.reloads.Load() != reloads+1 {
		t.Errorf("reloads after delete: %d, want %d", w.reloads.Load(), reloads+1)
	}
	if d := w.rt.Load().Policy.Decide(auth.Attempt{User: "carol", Secret: grouped, Protocol: "imap"}); d.Kind == auth.Passcode {
		t.Error("the deleted passcode still logs in")
	}
	c.post("/passcodes/delete", form("app", "Thunderbird")).wantRedirect("/account")
	c.get("/account").want(http.StatusOK, "That passcode no longer exists.")
	w.wantLog("passcode added", "passcode deleted", "app=Thunderbird")
	noSecrets(t, w.logs.String(), grouped, carolPW)
}

// Without 2FA there is no passcode list, and adding one is refused.
func TestPasscodesNeedTwoFA(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.get("/account").lacks(`id="passcodes"`)
	c.post("/passcodes/add", form("app", "Thunderbird")).wantRedirect("/account")
	if got := c.get("/account").text("error"); got != "Turn on two-factor authentication first." {
		t.Errorf("add without 2FA: %q", got)
	}
	if strings.Contains(w.accounts(), "carol") {
		t.Error("carol got into the accounts file")
	}
}

// The client settings: the server name, each listener's port and
// security per protocol, the user name unchanged, the passcode as the
// password.
func TestClientSettings(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.signIn("carol", carolPW, "").wantRedirect("/account")
	c.get("/account").want(http.StatusOK, `id="client-settings"`, "<code>"+mailHost+"</code>", "<code>carol</code>", "(unchanged)",
		"<tr><td>IMAP</td><td>993</td><td>SSL/TLS</td></tr>",
		"<tr><td>IMAP</td><td>143</td><td>STARTTLS</td></tr>",
		"<tr><td>POP3</td><td>995</td><td>SSL/TLS</td></tr>",
		"<tr><td>SMTP</td><td>587</td><td>STARTTLS</td></tr>",
		"an app passcode made for that app", "Normal password",
		"only on the campus network")
	c.lang = "ja"
	c.get("/account").want(http.StatusOK, "（これまでと同じ）", "アプリパスコード")
}

// A signed-in 2FA user's TOTP sign-in also works in Japanese, end to end.
func TestJapaneseJourney(t *testing.T) {
	w := newWorld(t)
	c := w.client(inside)
	c.lang = "ja"
	c.signIn("alice", alicePW, "").wantRedirect("/account")
	c.get("/account").want(http.StatusOK, "2段階認証を有効にする")
	page := c.follow(c.post("/2fa/start", nil)).want(http.StatusOK, "認証アプリ用のQRコード", "時間ベース")
	secret, err := otp.ParseKey(page.text("totp-key"))
	if err != nil {
		t.Fatal(err)
	}
	c.follow(c.post("/2fa/enroll", form("code", otp.Code(secret, w.now())))).want(http.StatusOK, "バックアップコード", "今回だけ")
	c.follow(c.post("/passcodes/add", form("app", "サイボウズ"))).want(http.StatusOK, "サイボウズ 用のアプリパスコード", "二度と表示できません")
	c.get("/account").want(http.StatusOK, `<tr data-app="サイボウズ">`, "未使用")
}
