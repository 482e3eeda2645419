// The Go peer of ChatApp for the chat benchmarks: the hub design of
// gorilla/websocket's chat example (a hub goroutine selecting over register,
// unregister and broadcast; a read pump and a write pump per client; send
// buffer 256; queued messages joined by newlines into one frame; the same
// timing constants), on Debian's golang-github-gorilla-websocket-dev.
//
//	gmppeers -chat-server 127.0.0.1:8080
//
// Like `ChatApp --stats` it serves GET /stats with the client count, live
// goroutines, open fds and RSS, so the churn benchmark can read both alike.
package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	chatWriteWait  = 10 * time.Second
	chatPongWait   = 60 * time.Second
	chatPingPeriod = chatPongWait * 9 / 10
	chatMaxMessage = 512
)

type chatClient struct {
	hub  *chatHub
	conn *websocket.Conn
	send chan []byte
}

type chatHub struct {
	clients    map[*chatClient]bool
	register   chan *chatClient
	unregister chan *chatClient
	broadcast  chan []byte
	count      int64 // read by /stats
}

func (h *chatHub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if h.clients[c] {
				delete(h.clients, c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- m:
				default: // a full buffer: drop that client, not the message
					close(c.send)
					delete(h.clients, c)
				}
			}
		}
		atomic.StoreInt64(&h.count, int64(len(h.clients)))
	}
}

func (c *chatClient) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(chatMaxMessage)
	c.conn.SetReadDeadline(time.Now().Add(chatPongWait))
	c.conn.SetPongHandler(func(string) error { return c.conn.SetReadDeadline(time.Now().Add(chatPongWait)) })
	for {
		_, m, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		c.hub.broadcast <- bytes.TrimSpace(bytes.ReplaceAll(m, []byte{'\n'}, []byte{' '}))
	}
}

func (c *chatClient) writePump() {
	ticker := time.NewTicker(chatPingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case m, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(chatWriteWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			w, err := c.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(m)
			for i, n := 0, len(c.send); i < n; i++ {
				w.Write([]byte{'\n'})
				w.Write(<-c.send)
			}
			if err := w.Close(); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(chatWriteWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

func countFds() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory's own fd
}

func chatServer(addr string) {
	hub := &chatHub{
		clients:    map[*chatClient]bool{},
		register:   make(chan *chatClient),
		unregister: make(chan *chatClient),
		broadcast:  make(chan []byte),
	}
	go hub.run()
	upgrader := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &chatClient{hub: hub, conn: conn, send: make(chan []byte, 256)}
		hub.register <- c
		go c.writePump()
		go c.readPump()
	})
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"clients":%d,"goroutines":%d,"fds":%d,"rss_bytes":%d}`,
			atomic.LoadInt64(&hub.count), runtime.NumGoroutine(), countFds(), rssBytes())
	})
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "chat server:", err)
		os.Exit(1)
	}
}
