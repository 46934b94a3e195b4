//go:build unix

package portal_test

import (
	"net/http"
	"testing"

	"github.com/kanmon-mail/kanmon/otp"
)

// Adding an authenticator hops between the nodes: the pending secret,
// its name and the adding mode live in the shared session, and the code
// that allowed the add was claimed in the shared replay guard, which the
// new key's code of the same step does not mind.
func TestClusterAddAuthenticatorAcrossNodes(t *testing.T) {
	_, w, b := cluster(t)
	a := w.srv
	c := w.client(inside)
	c.on(a).signIn("alice", alicePW, "").wantRedirect("/account")
	phone, _ := c.on(b).enroll()
	c.on(a).get("/account").want(http.StatusOK)
	w.advance(otp.Period)

	c.on(a).post("/2fa/authenticators/add", form("name", "iPad", "code", otp.Code(phone, w.now()))).wantRedirect("/2fa/enroll")
	page := c.on(b).get("/2fa/enroll").want(http.StatusOK, `id="enroll-adding"`).lacks(`id="enroll-name"`)
	if got := page.text("enroll-adding"); got != "Adding the authenticator app iPad." {
		t.Errorf("#enroll-adding on the other node: %q", got)
	}
	ipad := page.key()
	c.on(a).post("/2fa/enroll", form("code", otp.Code(ipad, w.now()))).wantRedirect("/account")
	r := c.on(b).get("/account").want(http.StatusOK)
	if got := r.text("notice"); got != "The authenticator app iPad is added: a code from it now signs you in." {
		t.Errorf("notice %q", got)
	}
	w.wantAuthenticators("alice", "Phone", "iPad")

	// The phone's code of that step was claimed on A: B refuses it.
	c.on(b).post("/2fa/authenticators/remove", form("name", "iPad", "code", otp.Code(phone, w.now()))).wantRedirect("/account")
	if got := c.on(a).get("/account").text("error"); got != removeWrongText {
		t.Errorf("a replayed code on the other node: %q", got)
	}
	w.advance(otp.Period)
	c.on(b).post("/2fa/authenticators/remove", form("name", "iPad", "code", otp.Code(phone, w.now()))).wantRedirect("/account")
	c.on(a).get("/account").want(http.StatusOK, onlyOneText)
	w.wantAuthenticators("alice", "Phone")
}
