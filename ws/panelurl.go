package ws

import (
	"net"
	"net/netip"
)

// PanelURL returns the URL to print at start, such as
// http://192.168.1.20:8080/ — and, when the token was generated (or read
// back from StateDir/token), the token in the fragment:
// http://192.168.1.20:8080/#token=…. Browsers never send a fragment; the
// panel reads it, logs in, and removes it from the address bar. Print it
// for the person at the console; never log it. A listen address of all
// interfaces is shown as this machine's first LAN IPv4 address (or
// hostname.local, or localhost).
func (s *Server) PanelURL() string {
	scheme := "http"
	if s.cfg.TLS.Enabled() {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		host, port = "localhost", "8080"
	}
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = s.lanHost()
	}
	u := scheme + "://" + net.JoinHostPort(host, port) + "/"
	if s.gate.generated != "" {
		u += "#token=" + s.gate.generated
	}
	return u
}

// lanHost names this machine for people on the LAN.
func (s *Server) lanHost() string {
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, _ := ifc.Addrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && ip.IsGlobalUnicast() {
						return ip.Unmap().String()
					}
				}
			}
		}
	}
	if s.gate.hostname != "" {
		return s.gate.hostname + ".local"
	}
	return "localhost"
}
