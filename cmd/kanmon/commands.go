package main

import (
	"fmt"
	"io"
	"strings"
)

// command is one entry of kanmon's command list. The list is the one
// source of `kanmon help` (usage) and of the man page kanmon(8)
// (manPage), so the two cannot drift.
type command struct {
	name string // the words after "kanmon": "passcode add"
	args string // what follows the name: "-config FILE USER APP"
	// help says what the command does, in the words `kanmon help` prints;
	// a "\n" starts a new line there. kanmon(8) prints it as a paragraph.
	help string
	// options are the flags beyond those in args, one line each.
	options []option
	// more is said in kanmon(8) only, after help.
	more string
}

// option is a flag of a command, with what it does.
type option struct {
	flag string // "-protocols imap,pop3,submission"
	help string
}

// commands is kanmon's command list, in the order of `kanmon help`.
// The hidden command man is not in it.
var commands = []command{
	{name: "serve", args: "-config FILE",
		help: "run the proxy (SIGHUP reloads, SIGTERM exits)",
		more: "It logs to stderr. SIGHUP re-reads the config, the accounts and the certificate, and closes the " +
			"sessions whose credential no longer stands; a config that does not parse leaves the running one in force. " +
			"SIGTERM (or SIGINT) stops accepting, lets logged-in sessions run for drain_timeout (10 s), closes them and exits 0."},
	{name: "check", args: "-config FILE",
		help: "validate config and accounts; exit 1 on error",
		more: "An error is printed as file:line: message. Warnings (a backend that does not get the client's address, " +
			"a missing pepper while passcodes exist, a Redis that does not answer) go to stderr and leave the exit status 0. " +
			"It touches neither the pepper nor the TOTP key, and the network only for the accounts database " +
			"and the Redis that the config names."},
	{name: "demo",
		help: "run a self-contained demo on local ports",
		more: "An embedded IMAP backend, a self-signed certificate, a user with 2FA and a printed passcode, " +
			"and the self-service portal, on 127.0.0.1. kanmon demo -h lists its flags (the ports)."},
	{name: "passcode add", args: "-config FILE USER APP",
		help:    "create an app passcode; printed once",
		options: []option{{"-protocols imap,pop3,submission", "only for these protocols"}},
		more:    "APP names the application that will use it (\"Thunderbird\", \"iPhone\"). Only its hash is stored."},
	{name: "passcode list", args: "-config FILE [USER]",
		help: "list passcodes (never the secrets) and their last use"},
	{name: "passcode revoke", args: "-config FILE USER APP",
		help: "delete a passcode (then reload)"},
	{name: "2fa enable", args: "-config FILE USER",
		help: "turn two-factor authentication on",
		more: "From the next reload the account's password is refused and only its app passcodes log in."},
	{name: "2fa disable", args: "-config FILE USER",
		help: "admin reset: 2FA off, all passcodes removed",
		more: "For a lost device: the authenticator and the one-time codes are removed too."},
	{name: "2fa status", args: "-config FILE USER",
		help: "2FA, authenticators, one-time codes left, passcodes"},
	{name: "2fa remove-authenticator", args: "-config FILE USER NAME",
		help: "remove one of several authenticators (then reload)",
		more: "For a lost or replaced device when the user has another. The last one is not removed this way: " +
			"kanmon 2fa disable turns 2FA off."},
	{name: "reload", args: "-config FILE",
		help: "make the running server re-read its files\n(and close sessions whose credential was revoked)",
		more: "It asks over the admin socket in state_dir, as the systemd unit's ExecReload does. " +
			"If the files are bad it prints file:line: message, exits 1, and the old configuration keeps serving."},
	{name: "sessions", args: "-config FILE [USER]",
		help: "list the live sessions (asks the running server)"},
	{name: "clients", args: "-config FILE USER",
		help: "the apps that presented USER's account password",
		more: "Two lists, each of the last 30 days and at most 16 apps: the logins refused because the account has 2FA on " +
			"and the app sent the account password, not a passcode; and the logins made with the password while 2FA was off " +
			"(each of those apps needs a passcode once 2FA is on). An app that logs in with a passcode leaves the first list. " +
			"It asks the running server, else reads Redis ([redis]) or state_dir/lastuse.db."},
	{name: "stale", args: "-config FILE",
		help:    "2FA accounts with apps still sending the password",
		options: []option{{"-since DURATION", "only apps seen within DURATION (default 720h, all kept)"}}},
	{name: "lockout list", args: "-config FILE",
		help: "list the locks in force (asks the running server)"},
	{name: "lockout clear", args: "-config FILE USER|IP|PREFIX",
		help: "lift locks and counters",
		more: "PREFIX is a network such as 192.0.2.0/24."},
	{name: "accounts import", args: "-config FILE ACCOUNTS.toml",
		help: "copy an accounts file into the accounts database",
		more: "The config's accounts must name a PostgreSQL database. Running it twice changes nothing the second time."},
	{name: "accounts export", args: "-config FILE",
		help: "write the accounts as an accounts file"},
	{name: "version",
		help: "print the version, commit and Go version"},
}

// Columns of `kanmon help`: the name, its arguments, what it does.
const (
	usageArgsCol = 18
	usageHelpCol = 42
)

// usage writes `kanmon help`: the command list, one command a line.
func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("usage: kanmon COMMAND [flags]\n\ncommands:\n")
	line := func(left, help string) {
		for i, h := range strings.Split(help, "\n") {
			if i > 0 {
				left = ""
			}
			pad := max(usageHelpCol-len(left), 3)
			if left == "" {
				pad = usageHelpCol
			}
			fmt.Fprintf(&b, "%s%s%s\n", left, strings.Repeat(" ", pad), h)
		}
	}
	for _, c := range commands {
		left := "  " + c.name
		if c.args != "" {
			left += strings.Repeat(" ", max(usageArgsCol-len(left), 1)) + c.args
		}
		line(left, c.help)
		for _, o := range c.options {
			line(strings.Repeat(" ", usageArgsCol)+"["+o.flag+"]", o.help)
		}
	}
	fmt.Fprint(w, b.String())
}
