package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	netproxy "golang.org/x/net/proxy"
)

// paho opens its connections through openConn (SetCustomOpenConnectionFn)
// so that Run can end a connection attempt when it ends: paho waits up to
// connect_timeout for a broker that accepted the TCP connection but does
// not answer, and cannot be told to stop. The connection is opened as
// paho's own openConnection does, proxy variables included.

// errStopped refuses a connection once Run has ended.
var errStopped = errors.New("mqtt: the client has stopped")

// dials holds, for every connection being opened or open, the function
// that ends it.
type dials struct {
	mu      sync.Mutex
	stopped bool
	next    uint64
	end     map[uint64]func()
}

// add registers end; false once stopped.
func (d *dials) add(end func()) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return 0, false
	}
	if d.end == nil {
		d.end = make(map[uint64]func())
	}
	d.next++
	d.end[d.next] = end
	return d.next, true
}

// set replaces id's end function; false once stopped (the caller ends it).
func (d *dials) set(id uint64, end func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return false
	}
	d.end[id] = end
	return true
}

func (d *dials) remove(id uint64) {
	d.mu.Lock()
	delete(d.end, id)
	d.mu.Unlock()
}

// stop ends every dial and connection and refuses new ones.
func (d *dials) stop() {
	d.mu.Lock()
	d.stopped = true
	ends := d.end
	d.end = nil
	d.mu.Unlock()
	for _, end := range ends {
		end()
	}
}

// trackedConn forgets its entry in dials when paho closes it.
type trackedConn struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (t *trackedConn) Close() error {
	t.once.Do(t.forget)
	return t.Conn.Close()
}

// openConn is paho's OpenConnectionFunc.
func (c *Client) openConn(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	id, ok := c.dials.add(cancel)
	if !ok {
		return nil, errStopped
	}
	conn, err := dialBroker(ctx, uri, o)
	if err != nil {
		c.dials.remove(id)
		return nil, err
	}
	if bc, ok := conn.(*bufConn); ok {
		bc.tap = c
	}
	if !c.dials.set(id, func() { conn.Close() }) {
		conn.Close()
		return nil, errStopped
	}
	return &trackedConn{Conn: conn, forget: func() { c.dials.remove(id) }}, nil
}

// dialBroker opens the network connection for uri as paho's openConnection
// does (v1.5.1 netconn.go), but under ctx where the dial allows it.
func dialBroker(ctx context.Context, uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri // gorilla refuses a URL with user info
		u.User = nil
		var tlsc *tls.Config
		if uri.Scheme == "wss" {
			tlsc = o.TLSConfig
		}
		return paho.NewWebsocket(u.String(), tlsc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "mqtt", "tcp":
		conn, err := dialProxy(ctx, netproxy.FromEnvironmentUsing(d), uri.Host)
		if err != nil {
			return nil, err
		}
		return newBufConn(conn), nil
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		if os.Getenv("all_proxy") == "" {
			conn, err := (&tls.Dialer{NetDialer: d, Config: o.TLSConfig}).DialContext(ctx, "tcp", uri.Host)
			if err != nil {
				return nil, err
			}
			return newBufConn(conn), nil
		}
		conn, err := dialProxy(ctx, netproxy.FromEnvironment(), uri.Host)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(conn, o.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		return newBufConn(tc), nil
	}
	return nil, fmt.Errorf("broker %s: %w", uri.Redacted(), errUnknownScheme)
}

func dialProxy(ctx context.Context, d netproxy.Dialer, addr string) (net.Conn, error) {
	if cd, ok := d.(netproxy.ContextDialer); ok {
		return cd.DialContext(ctx, "tcp", addr)
	}
	return d.Dial("tcp", addr)
}
