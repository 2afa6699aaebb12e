package ws

import (
	"crypto/sha256"
	"sync"
	"time"

	"pibridge"
)

// sessionKey is the SHA-256 of a session's cookie value: the map is keyed
// by it, so a lookup's timing says nothing about stored values.
type sessionKey [sha256.Size]byte

// sessionStore is the server-side side of the panel's cookie: bounded in
// size, each session valid for ttl from login.
type sessionStore struct {
	t *tuning // maxSessions, sessionTTL

	mu sync.Mutex
	m  map[sessionKey]session
}

type session struct {
	role    role
	expires time.Time
}

func newSessionStore(t *tuning) *sessionStore {
	return &sessionStore{t: t, m: make(map[sessionKey]session)}
}

// create starts a session and returns its cookie value. When the store is
// full, expired sessions go first, then the one closest to expiry.
func (st *sessionStore) create(r role, now time.Time) (value string) {
	value = pibridge.RandomText()
	expires := now.Add(st.t.sessionTTL)
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.m) >= st.t.maxSessions {
		var oldest sessionKey
		var oldestExp time.Time
		for k, s := range st.m {
			if !now.Before(s.expires) {
				delete(st.m, k)
				continue
			}
			if oldestExp.IsZero() || s.expires.Before(oldestExp) {
				oldest, oldestExp = k, s.expires
			}
		}
		if len(st.m) >= st.t.maxSessions {
			delete(st.m, oldest)
		}
	}
	st.m[sha256.Sum256([]byte(value))] = session{role: r, expires: expires}
	return value
}

func (st *sessionStore) lookup(value string, now time.Time) (access, bool) {
	if value == "" {
		return access{}, false
	}
	key := sessionKey(sha256.Sum256([]byte(value)))
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[key]
	if !ok {
		return access{}, false
	}
	if !now.Before(s.expires) {
		delete(st.m, key)
		return access{}, false
	}
	return access{role: s.role, session: key}, true
}

func (st *sessionStore) remove(value string) (sessionKey, bool) {
	key := sessionKey(sha256.Sum256([]byte(value)))
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.m[key]
	delete(st.m, key)
	return key, ok
}

func (st *sessionStore) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}
