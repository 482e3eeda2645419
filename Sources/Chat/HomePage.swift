/// The chat page: one self-contained file, no build step. It speaks the JSON
/// envelope (Envelope.swift): the rooms and their member counts on the left
/// (click one to join it), the current room's members above its messages,
/// the room's history when it is joined, and a form that sends a message or
/// a command (/join, /nick, /msg, …). When the connection drops it
/// reconnects with a growing back-off (0.5 s doubling to 10 s, reset once a
/// connection holds), asking with `since` (the newest message it has shown,
/// or the newest the room had when it joined) for what it missed in its
/// room: the server sends that before live messages (or a "gap" line if some
/// are no longer kept), and the page also ignores a number it has shown
/// already, so a blinking connection loses nothing silently and shows
/// nothing twice. A close with 1012 (service restart: the server drains,
/// ChatServer.drain) makes it reconnect at once, without the back-off, as
/// another node (or this one, restarted) can take it now; at most once a
/// second, and only after a connection that had opened, so a server that
/// says 1012 on every connection cannot make it spin. A "reset" (the server
/// lost the room's history) makes it forget its numbers for the room. With
/// auth on (ChatConfig.authSecret) the page's address carries the client's
/// token in its fragment, `/#token=…`, and every WebSocket it opens passes
/// it on (`token=`). Every text from the server goes in as text, never as HTML.
let homePage = """
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Chat</title>
<style>
html, body { height: 100%; margin: 0; font-family: sans-serif; background: #eee; }
#side { position: absolute; top: 0.5em; left: 0.5em; width: 12em; bottom: 0.5em; overflow: auto;
        background: white; padding: 0.5em; box-sizing: border-box; }
#side h2 { font-size: 1em; margin: 0 0 0.3em 0; }
#rooms div { cursor: pointer; padding: 0.1em 0.2em; }
#rooms div.current { font-weight: bold; background: #def; }
#members { margin-top: 1em; }
#main { position: absolute; top: 0.5em; left: 13em; right: 0.5em; bottom: 0.5em; }
#head { height: 1.6em; line-height: 1.6em; }
#log { position: absolute; top: 1.8em; left: 0; right: 0; bottom: 2.5em; overflow: auto;
       background: white; padding: 0.5em; box-sizing: border-box; }
#log div { white-space: pre-wrap; overflow-wrap: anywhere; } /* a long word wraps, never widens the pane */
#log .status { color: #888; font-style: italic; }
#log .error { color: #b00; }
#log .private { color: #060; }
#log .time { color: #999; font-size: 0.8em; margin-right: 0.4em; }
#form { position: absolute; bottom: 0; left: 0; right: 0; display: flex; gap: 0.5em; }
#msg { flex: 1; }
</style>
</head>
<body>
<div id="side"><h2>Rooms</h2><div id="rooms"></div><div id="members"></div></div>
<div id="main">
<div id="head">Room: <b id="room">lobby</b> <span id="state"></span></div>
<div id="log"></div>
<form id="form"><input type="text" id="msg" autocomplete="off" autofocus placeholder="a message, or /help"><input type="submit" value="Send"></form>
</div>
<script>
const log = document.getElementById("log"), msg = document.getElementById("msg");
let conn = null, room = "lobby", backoff = 500, timer = null, restarted = 0;
const last = {};   // room -> the newest message number shown
function el(tag, text, cls) { const d = document.createElement(tag); d.textContent = text; if (cls) d.className = cls; return d; }
function append(text, cls, time) {
  const atBottom = log.scrollTop > log.scrollHeight - log.clientHeight - 1;
  const d = el("div", "", cls);
  if (time) d.appendChild(el("span", new Date(time).toLocaleTimeString(), "time"));
  d.appendChild(document.createTextNode(text));
  log.appendChild(d);
  if (atBottom) log.scrollTop = log.scrollHeight - log.clientHeight;
}
function enter(r) {   // the view follows the room the server puts us in
  if (r === room) return;
  room = r;
  delete last[r];     // a fresh view: the room's history comes again
  log.textContent = "";
  document.getElementById("room").textContent = r;
}
function send(text) { if (conn && conn.readyState === WebSocket.OPEN) conn.send(text); }
function handle(m) {
  switch (m.type) {
  case "message":
    enter(m.room);
    if (m.seq <= (last[m.room] || 0)) return;   // shown already
    last[m.room] = m.seq;
    append((m.from ? m.from + ": " : "") + m.text, "", m.time);
    break;
  case "joined":
    enter(m.room);
    last[m.room] = Math.max(last[m.room] || 0, m.seq);   // a reconnect asks for what follows
    append("You are in " + m.room + ".", "status");
    send("/who"); send("/rooms");
    break;
  case "reset":
    enter(m.room);
    delete last[m.room];
    append("The server no longer has this room's history past message " + m.seq + ".", "status");
    break;
  case "gap": append("Messages " + m.from + " to " + m.to + " are no longer kept.", "status"); break;
  case "rooms": {
    const list = document.getElementById("rooms");
    list.textContent = "";
    for (const r of m.rooms) {
      const d = el("div", r.name + " (" + r.members + ")", r.name === room ? "current" : "");
      d.onclick = () => { if (r.name !== room) send("/join " + r.name); };
      list.appendChild(d);
    }
    break;
  }
  case "who": {
    const ms = document.getElementById("members");
    ms.textContent = "";
    ms.appendChild(el("h2", "In " + m.room));
    for (const n of m.names) ms.appendChild(el("div", n));
    if (m.anonymous) ms.appendChild(el("div", m.anonymous + " without a name", "status"));
    break;
  }
  case "private": append("(private) " + m.from + ": " + m.text, "private"); break;
  case "error": append("error: " + m.text, "error"); break;
  case "info": append(m.text, "status"); break;
  }
}
// With auth on, the page's address carries the client's token in its
// fragment (#token=…: never sent to a server, nor in a Referer); the
// WebSocket passes it on.
const token = new URLSearchParams(location.hash.slice(1)).get("token");
function connect() {
  timer = null;
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  let q = "?room=" + encodeURIComponent(room);
  if (last[room] !== undefined) q += "&since=" + last[room];
  if (token) q += "&token=" + encodeURIComponent(token);
  const c = new WebSocket(proto + location.host + "/ws" + q);
  conn = c;
  let opened = 0;
  c.onopen = () => { opened = Date.now(); append("Connected.", "status"); document.getElementById("state").textContent = ""; };
  c.onclose = (e) => {
    if (conn !== c) return;
    if (opened && Date.now() - opened > 5000) backoff = 500;   // it held: start the back-off afresh
    document.getElementById("state").textContent = "(offline)";
    if (e.code === 1012 && opened && Date.now() - restarted > 1000) {   // the server restarts: another takes us now
      restarted = Date.now();
      append("The server is restarting; reconnecting...", "status");
      timer = setTimeout(connect, 0);
      return;
    }
    append("Connection lost; reconnecting in " + (backoff / 1000) + " s...", "status");
    timer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
  c.onmessage = (e) => {
    for (const line of e.data.split("\\n")) {
      let m;
      try { m = JSON.parse(line); } catch (err) { append(line); continue; }
      handle(m);
    }
  };
}
setInterval(() => { send("/who"); send("/rooms"); }, 10000);
document.getElementById("form").onsubmit = (e) => {
  e.preventDefault();
  if (!conn || conn.readyState !== WebSocket.OPEN || !msg.value) return;
  conn.send(msg.value);
  msg.value = "";
};
connect();
</script>
</body>
</html>
"""
