package config

import (
	"fmt"
	"net/netip"
)

// finishClientIP parses proxy_trusted_networks and id_trusted_networks and
// checks that a listener with proxy_protocol has someone to trust.
func (c *Config) finishClientIP() error {
	var err error
	if c.ProxyTrustedPrefixes, err = c.parsePrefixes("proxy_trusted_networks", c.ProxyTrustedNetworks); err != nil {
		return err
	}
	if c.IDTrustedPrefixes, err = c.parsePrefixes("id_trusted_networks", c.IDTrustedNetworks); err != nil {
		return err
	}
	for i, l := range c.Listeners {
		if l.ProxyProtocol && len(c.ProxyTrustedPrefixes) == 0 {
			return c.errorf(fmt.Sprintf("listener[%d].proxy_protocol", i),
				"listener: proxy_protocol needs proxy_trusted_networks (the load balancers allowed to send the header)")
		}
	}
	return nil
}

// parsePrefixes parses the prefixes of the list at key.
func (c *Config) parsePrefixes(key string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, n := range list {
		p, err := parsePrefix(n)
		if err != nil {
			return nil, c.errorf(fmt.Sprintf("%s[%d]", key, i), "%s: %q is not a CIDR prefix or address", key, n)
		}
		out = append(out, p)
	}
	return out, nil
}

// finishForward defaults and checks [backend.proto] forward_client_ip:
// ID is IMAP's, XCLIENT is an SMTP and POP3 extension, and a PROXY header
// works for any protocol.
func finishForward(proto string, b *Backend) error {
	if b.ForwardClientIP == "" {
		b.ForwardClientIP = ForwardNone
	}
	switch b.ForwardClientIP {
	case ForwardNone, ForwardPROXY:
		return nil
	case ForwardID:
		if proto == ProtocolIMAP {
			return nil
		}
		return fmt.Errorf("forward_client_ip %q is for imap only: use xclient or proxy for %s", b.ForwardClientIP, proto)
	case ForwardXCLIENT:
		if proto == ProtocolPOP3 || proto == ProtocolSubmission {
			return nil
		}
		return fmt.Errorf("forward_client_ip %q is for pop3 and submission: use id or proxy for %s", b.ForwardClientIP, proto)
	}
	return fmt.Errorf("forward_client_ip %q: want none, id, xclient or proxy", b.ForwardClientIP)
}
