package mqtt

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	netproxy "golang.org/x/net/proxy"
)

// readBuffer is what one read(2) may bring in: a burst of small packets,
// or one packet of up to a few KiB.
const readBuffer = 4 << 10

// bufConn reads through a buffer: paho's packets.ReadPacket reads the
// fixed header byte, each remaining-length byte and then the rest, which
// on a bare socket is one read(2) (and one netpoller wake-up) per field.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func newBufConn(c net.Conn) *bufConn {
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, readBuffer)}
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// openConnection opens the connection to broker as paho v1.5.1's own
// openConnection does (same dialer, proxy from the environment, TLS
// config), and reads tcp:// and ssl:// connections through a buffer.
// ws:// and wss:// are left as paho opens them: gorilla's connection
// already reads through a buffer of its own.
func openConnection(broker *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: 30 * time.Second}
	}
	switch broker.Scheme {
	case "ws", "wss":
		u := *broker
		u.User = nil // gorilla refuses a URL with user info
		var tlsc *tls.Config
		if broker.Scheme == "wss" {
			tlsc = o.TLSConfig
		}
		return paho.NewWebsocket(u.String(), tlsc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "tcp", "mqtt":
		c, err := netproxy.FromEnvironmentUsing(d).Dial("tcp", broker.Host)
		if err != nil {
			return nil, err
		}
		return newBufConn(c), nil
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		if os.Getenv("all_proxy") == "" {
			c, err := tls.DialWithDialer(d, "tcp", broker.Host, o.TLSConfig)
			if err != nil {
				return nil, err
			}
			return newBufConn(c), nil
		}
		raw, err := netproxy.FromEnvironment().Dial("tcp", broker.Host)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, o.TLSConfig)
		if err := c.Handshake(); err != nil {
			_ = raw.Close()
			return nil, err
		}
		return newBufConn(c), nil
	}
	return nil, fmt.Errorf("broker %s: %w", broker.Redacted(), errUnknownScheme)
}

var errUnknownScheme = errors.New("unknown scheme: want tcp, ssl, ws or wss")
