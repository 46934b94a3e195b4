package portal

import (
	"testing"

	"github.com/kanmon-mail/kanmon/mailsetup"
)

// The Apple profile's address: the account name when it is an address,
// else the name at [users]' first domain, else at the mail host.
func TestAppleEmail(t *testing.T) {
	withDomain := mailsetup.Settings{Host: "mail.example.edu", Domain: "example.edu"}
	noDomain := mailsetup.Settings{Host: "mail.example.edu"}
	for _, tc := range []struct {
		name     string
		user     string
		settings mailsetup.Settings
		want     string
	}{
		{"an address, with a domain", "alice@example.edu", withDomain, "alice@example.edu"},
		{"an address in another domain", "bob@partner.example", withDomain, "bob@partner.example"},
		{"an address, no domain", "alice@example.org", noDomain, "alice@example.org"},
		{"a name, with a domain", "alice", withDomain, "alice@example.edu"},
		{"a name, no domain", "alice", noDomain, "alice@mail.example.edu"},
		{"a name kept as spelt", "Alice.Smith", withDomain, "Alice.Smith@example.edu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := appleEmail(tc.user, tc.settings); got != tc.want {
				t.Errorf("appleEmail(%q) = %q, want %q", tc.user, got, tc.want)
			}
		})
	}
}

// The profile's file name keeps ASCII letters, digits and hyphens, turns
// spaces and underscores into hyphens, and drops the rest; nothing left
// is "mail".
func TestAppleFileName(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"iPhone", "iPhone.mobileconfig"},
		{"Mac mini", "Mac-mini.mobileconfig"},
		{"iPhone 15 Pro", "iPhone-15-Pro.mobileconfig"},
		{"work_iPad", "work-iPad.mobileconfig"},
		{"仕事用のiPad", "iPad.mobileconfig"},
		{"Zoë's Mac!", "Zos-Mac.mobileconfig"},
		{`a"b;c\d`, "abcd.mobileconfig"},
		{"../../etc/passwd", "etcpasswd.mobileconfig"},
		{" -iPad- ", "iPad.mobileconfig"},
		{"スマートフォン", "mail.mobileconfig"},
		{"!!!", "mail.mobileconfig"},
		{"", "mail.mobileconfig"},
	} {
		if got := appleFileName(tc.name); got != tc.want {
			t.Errorf("appleFileName(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The setup documents' paths, which the portal serves before its pages:
// autodiscover in any case (Outlook varies it), autoconfig exactly.
func TestMailSetupPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/mail/config-v1.1.xml", true},
		{"/.well-known/autoconfig/mail/config-v1.1.xml", true},
		{"/autodiscover/autodiscover.xml", true},
		{"/Autodiscover/Autodiscover.xml", true},
		{"/AUTODISCOVER/AUTODISCOVER.XML", true},
		{"/", false},
		{"/account", false},
		{"/setup/apple", false},
		{"/mail/", false},
		{"/autodiscover/", false},
		{"/autodiscover/autodiscover.xml/", false},
		{"/x/autodiscover/autodiscover.xml", false},
	} {
		if got := mailSetupPath(tc.path); got != tc.want {
			t.Errorf("mailSetupPath(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}
